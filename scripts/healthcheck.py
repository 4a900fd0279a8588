#!/usr/bin/env python3
"""Container health check: exit 0 when the web process answers GET /api/v1/status with 200.

Used by the Dockerfile's HEALTHCHECK and compose.yaml (the image has no curl). Production
settings redirect plain HTTP to HTTPS and reject unknown Host headers, so the probe says
it came through the TLS proxy (X-Forwarded-Proto, which SECURE_PROXY_SSL_HEADER trusts)
and names the first of ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def probe_host() -> str:
    first = os.environ.get("ALLOWED_HOSTS", "").split(",")[0].strip()
    if not first or first.startswith("*"):
        return "localhost"
    # ".example.com" allows example.com and its subdomains.
    return first.lstrip(".")


def main() -> int:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/status",
        headers={"Host": probe_host(), "X-Forwarded-Proto": "https"},
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
