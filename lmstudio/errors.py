"""Errors meant for a person: ``str(e)`` says what happened and what to do.

The shared layer (no torch, no Qt): the engine raises these, the UI shows them in a dialog and the CLI
prints one line and exits non-zero; any other exception is a bug.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error the app or the CLI shows to the user as a message."""


class ConfigError(UserError, ValueError):
    """A setting is invalid. ``errors`` maps a dotted field name to the reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))
