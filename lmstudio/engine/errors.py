"""Errors meant for a person: ``str(e)`` says what happened and what to do.

The UI shows them in a dialog and the CLI prints one line and exits non-zero; any other exception is a bug.
"""


class UserError(Exception):
    """Base of every error the app or the CLI shows to the user as a message."""
