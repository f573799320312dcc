"""The engine's errors are the shared layer's (``lmstudio.errors``); this name is kept for old imports."""

from lmstudio.errors import ConfigError, UserError

__all__ = ["ConfigError", "UserError"]
