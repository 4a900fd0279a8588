"""Periodic jobs, for `python manage.py rqcron exchange_site.cron`.

rqcron only enqueues them on the `default` queue at their interval; the one
`rqworker default --with-scheduler` process runs them.
"""

from rq import cron

from marketdata.jobs import drop_old_trades, publish_closed_candles
from trading.jobs import sweep_unqueued_orders

# Orders whose push was lost (a web process died between commit and enqueue) reach the
# engine within SWEEP_AFTER (5 s) plus this interval.
cron.register(sweep_unqueued_orders, "default", interval=3, result_ttl=0, failure_ttl=3600)

# Candles that ended without a trade after them: on each minute boundary, just after they close.
cron.register(publish_closed_candles, "default", cron="* * * * *", result_ttl=0, failure_ttl=3600)
# Trade retention (BOURSE_TRADE_RETENTION_DAYS): chunks are a day, so hourly is plenty.
cron.register(drop_old_trades, "default", cron="17 * * * *", result_ttl=0, failure_ttl=86400)
