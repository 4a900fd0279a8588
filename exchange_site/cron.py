"""Periodic jobs, for `python manage.py rqcron exchange_site.cron`.

rqcron only enqueues them on the `default` queue at their interval; the one
`rqworker default --with-scheduler` process runs them.
"""

from rq import cron

from trading.jobs import sweep_unqueued_orders

# Orders whose push was lost (a web process died between commit and enqueue) reach the
# engine within SWEEP_AFTER (5 s) plus this interval.
cron.register(sweep_unqueued_orders, "default", interval=3, result_ttl=0, failure_ttl=3600)
