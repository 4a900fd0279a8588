"""Local development and the default `run`: debug on unless the environment says otherwise."""

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = env_bool("DEBUG", True)
BOURSE_DEMO = env_bool("BOURSE_DEMO", True)
