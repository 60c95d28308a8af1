"""Ponder's error types. Every error the library raises for a reason the caller can fix (a bad setting, a
malformed file, a model that cannot be loaded, a server that refuses) is a `PonderError`; the CLI turns one into
a single line and exit code 2. Any other exception is a bug and keeps its traceback.

Most subclasses live beside the code that raises them (`TaskError` in `ponder.tasks.base`, `ServerError` in
`ponder.lm.openai_http`, `ContextLengthError` in `ponder.lm.base`, `VerifierError` in `ponder.verifiers.learned`);
`ConfigError` and `ModelLoadError` are here because several layers and backends raise them.
"""

from __future__ import annotations


class PonderError(Exception):
    """An error the caller can fix; its message says what is wrong and how to fix it."""


class ConfigError(PonderError, ValueError):
    """A bad setting: an unknown name, a value out of range, knobs that do not fit together."""


class MissingExtra(PonderError, ImportError):
    """An optional part of Ponder used without the package it needs; the message names the extra that installs it."""

    def __init__(self, what: str, package: str, extra: str) -> None:
        super().__init__(f"{what} needs {package}: pip install 'ponder[{extra}]'")


class ModelLoadError(PonderError, ValueError):
    """A model that cannot be found or loaded; the message names it and what was tried."""
