"""Settings for `bench/pipeline_bench.py`: the local settings, DEBUG off (no query log),
and a Channels prefix of its own so the bench's frames never reach another run's groups."""

from exchange_site.settings.local import *  # noqa: F403
from exchange_site.settings.local import REDIS_URL

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "bourse-bench-" + REDIS_URL.rsplit("/", 1)[-1]},
    }
}
