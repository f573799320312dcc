"""The trainer's events live in the shared layer (``lmstudio.events``); this name is kept for old imports."""

from lmstudio.events import *  # noqa: F403
