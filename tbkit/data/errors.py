"""Errors a tbkit user can act on, and the one message formula they share.

Every message names the argument, what was expected and what came, e.g.
``'every' must be a positive int or a Schedule (got 0 that is a <class 'int'>).``
"""

from __future__ import annotations

from typing import Any


class TbkitError(Exception):
    """Base class of every error tbkit raises on purpose."""

    # AutoGraph re-raises errors from traced user code as StagingError unless they carry this:
    # tbkit's errors reach the user with their own type and message.
    ag_pass_through = True


class TbkitValueError(TbkitError, ValueError):
    """An argument has the right kind but a value tbkit cannot use."""


class TbkitTypeError(TbkitError, TypeError):
    """An argument (or a record field) has a type tbkit cannot use."""


class NoActiveLoggerError(TbkitError, RuntimeError):
    """A summary op ran with no SummaryLogger active in this thread."""


class LoggerClosedError(TbkitError, RuntimeError):
    """A closed SummaryLogger was asked to write."""


def got(value: Any) -> str:
    """Describe ``value`` the way every tbkit message does: ``got 0 that is a <class 'int'>``."""
    return f"got {value!r} that is a {type(value)}"


def expected(arg: str, what: str, value: Any) -> str:
    """The message formula: ``'arg' must be WHAT (got VALUE that is a TYPE).``"""
    return f"'{arg}' must be {what} ({got(value)})."


class DataLossWarning(UserWarning):
    """A reader skipped data it could not trust (a corrupt record, a newer schema)."""


class SupersedeWarning(UserWarning):
    """A logger writes to a run folder whose earlier records its steps will pre-empt (newest
    write wins), so TensorBoard and tbkit's readers will no longer show them."""
