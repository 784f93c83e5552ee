"""Errors a user can act on.

Every error raised for bad input derives from :class:`ToolkitError`; the command-line entry points catch
it, print its one-line message to stderr and exit with status 2 (no traceback).
"""

from __future__ import annotations

from pathlib import Path


class ToolkitError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 2


class DataFormatError(ToolkitError):
    """A data file does not have the expected format.

    The message names the file, the 1-based line number (when there is one), what was found and what was
    expected, on one line.
    """

    def __init__(self, path: str | Path, line: int | None, found: str, expected: str):
        self.path = str(path)
        self.line = line
        self.found = found
        self.expected = expected
        where = f"{self.path}:{line}" if line is not None else self.path
        found = found if len(found) <= 80 else found[:77] + "..."
        super().__init__(f"{where}: found {found}; expected {expected}")


class ConfigError(ToolkitError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class UnseenEntityError(ToolkitError):
    """Valid/test triples mention entities or relations absent from training and ``unseen='error'``."""


class RunDirExistsError(ToolkitError):
    """A run folder exists and ``--overwrite`` was not given."""
