"""Errors a user can fix, printed by the command line as one line instead of a traceback.

A command that meets a wrong argument, a missing file, an unknown model version or a job store
that does not exist yet raises :class:`UserError` (or :class:`UsageError` for a wrong argument)
with the problem and how to fix it. ``deepcovid`` (and ``python -m training``) print
``<command>: <problem>; <fix>`` and exit with :attr:`UserError.status`; the traceback appears only
with ``--debug`` or ``DEEPCOVID_LOG_LEVEL=DEBUG``. Everything else stays a bug and keeps its
traceback. No dependencies: the training machines import this too.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix, with the fix; exit status 1 (the environment is not right)."""

    status = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class UsageError(UserError, ValueError):
    """A wrong argument (unknown version, missing input file, unknown split): exit status 2,
    as argparse's own usage errors. Also a :class:`ValueError`, so that code which caught the
    ``ValueError`` a check raised before it became a usage error still catches it."""

    status = 2
