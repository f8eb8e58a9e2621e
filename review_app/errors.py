"""Turn every failure of a UI handler into a short message for the reviewer, never a traceback.

``ValueError`` and its subclasses (``ImageReadError``, ``QuestionError``, ``FeedbackValidationError``) carry
messages written for people and are shown as they are. Anything else is logged with its traceback on the
server and shown as a generic message with a reference to the log.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import gradio as gr

log = logging.getLogger("diffvqa.app")
P = ParamSpec("P")
R = TypeVar("R")
MAX_MESSAGE = 300


class UserError(ValueError):
    """A problem the reviewer can fix (no image chosen, no analysis yet, ...)."""


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a handler so that it raises only ``gr.Error`` with a clean message."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            raise gr.Error(_clip(str(exc) or type(exc).__name__), print_exception=False) from None
        except Exception:  # noqa: BLE001 - the point: nothing reaches the browser as a traceback
            ref = uuid.uuid4().hex[:8]
            log.exception("unexpected error in %s (ref %s)", fn.__name__, ref)
            raise gr.Error(f"Something went wrong on the server (ref {ref}); the details are in the app's log.",
                           print_exception=False) from None

    return wrapper


def _clip(message: str) -> str:
    """One line, at most :data:`MAX_MESSAGE` characters, angle brackets defused (toasts may render HTML)."""
    message = " ".join(message.split()).replace("<", "‹").replace(">", "›")
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
