"""Every failure a user can fix is a ``LorallamaError``: one subclass per area, each message naming the thing and the fix.

The command line (``lorallama.cli``) catches them: it prints ``lorallama: error: <message>`` on one line and exits
with 2; ``LORALLAMA_DEBUG=1`` shows the traceback too. The studio Space's page (``lorallama.studio.app``) is the other
boundary: it shows the message on the page. Library code raises and never prints.
"""

from __future__ import annotations


class LorallamaError(Exception):
    """A failure the user can fix; ``str(e)`` says what went wrong and what to do."""

    exit_code = 2


class RecipeError(LorallamaError, ValueError):
    """A recipe that cannot be used as written; the message names the key and the fix."""


class DataError(LorallamaError, ValueError):
    """Training data that cannot be used; the message names the file, the row and the fix."""


class ModelError(LorallamaError, RuntimeError):
    """A base model or adapter that cannot be found or used; the message says what to do."""


class TrainError(LorallamaError, RuntimeError):
    """A run that cannot start or finish as asked; the message says why and what to do."""


class JobError(LorallamaError, RuntimeError):
    """A job that cannot be launched or did not finish; the message says what to do."""


class HubError(LorallamaError, RuntimeError):
    """A Hub operation that failed for good (after retries); the message names the repo and the fix."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SpaceError(LorallamaError, RuntimeError):
    """A Space that cannot be configured or started; the message names the variable and the fix."""


class FeedbackError(LorallamaError, RuntimeError):
    """Feedback that cannot be read or written; the message says what to do."""


class CardError(LorallamaError, RuntimeError):
    """A card that cannot be rendered or pushed; the message says what is missing and how to get it."""


class SyncError(LorallamaError, RuntimeError):
    """A target that cannot be synced as it is; the message names the file and the fix."""


class PublishError(LorallamaError, RuntimeError):
    """Data that cannot be published as asked; the message says what to pass instead."""


class ExportError(LorallamaError, RuntimeError):
    """An export that cannot be made or failed its check; the message says why."""


class StudioError(LorallamaError, RuntimeError):
    """The studio Space refused a visitor's request (not signed in, a missing scope, bad input, a run already
    going): nothing was spent, and the message says what to do instead."""
