"""Errors caused by the user's input, files or run folders (a leaf module: every tier may import it).

Anything raised as a ``SeqzooError`` is a mistake the user can fix from the message alone, so the command line
prints it as one line and exits 2; every other exception is a bug in seqzoo and keeps its traceback. Each class
also derives from the built-in exception a Python caller would expect (``ValueError``, ``KeyError``,
``FileExistsError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class SeqzooError(Exception):
    """Base of every user-facing error: the message names what was wrong and what was expected."""

    def __str__(self) -> str:  # KeyError would quote the message; every subclass prints it as written
        return str(self.args[0]) if self.args else ""


class ConfigError(SeqzooError, ValueError):
    """A model, task or train argument (or a ``key=value`` override) of the wrong name, type or value."""


class DataError(SeqzooError, ValueError):
    """A data file that is missing, unreadable or malformed; the message names the file (and line)."""


class MissingDataError(DataError, FileNotFoundError):
    """A data file or folder that is not there (a ``DataError`` that is also a ``FileNotFoundError``)."""


class RunError(SeqzooError, ValueError):
    """A run folder or run index that cannot be used (corrupt, tampered, not a seqzoo run)."""


class IntegrityError(RunError):
    """A weights or checkpoint file whose size or SHA-256 does not match what was recorded."""


class RunExistsError(SeqzooError, FileExistsError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


class UnknownNameError(SeqzooError, KeyError):
    """A name that is not registered; the message suggests the closest valid one."""


class RunNotFoundError(RunError, FileNotFoundError):
    """A run folder, or a file a run needs, that does not exist."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument whose value has the wrong type (a ``TypeError``, as Python raises for one)."""


class UnknownArgumentError(ConfigTypeError):
    """An argument a builder does not take (a ``TypeError``, as Python raises for an unexpected keyword)."""
