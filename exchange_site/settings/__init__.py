"""Settings package: `base` holds everything, `local`/`test`/`production` adjust it.

All configuration comes from environment variables with safe local defaults.
"""
