"""Errors that the CLI turns into one readable line and exit code 2 (never a traceback)."""

from __future__ import annotations


class WssegError(Exception):
    """A problem the user can fix: bad arguments, missing files, an unusable checkpoint."""


class DataError(WssegError):
    """One input file (image, mask, annotation) is unusable.

    Commands with ``--skip-bad`` count and skip these instead of stopping.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
