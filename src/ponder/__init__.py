"""Ponder: spend compute at test time to make language models reason better.

    import ponder
    trace = ponder.solve("4 5 6 10")     # a game24 puzzle, the task's default method, model and verifier
    print(trace.solution, trace.answer, trace.correct)

The names below are the public API. Those that need torch load on first use, so `import ponder` stays quick.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ponder.errors import ConfigError, MissingExtra, PonderError

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first use (PEP 562)
_LAZY = {
    "solve": "ponder.api", "shared_model": "ponder.lm.load", "shared_verifier": "ponder.verifiers",
    "clear_cache": "ponder.api",
    "Task": "ponder.tasks", "Problem": "ponder.tasks", "TaskError": "ponder.tasks", "NoReference": "ponder.tasks",
    "get_task": "ponder.tasks",
    "LanguageModel": "ponder.lm.base", "Request": "ponder.lm.base", "SamplingParams": "ponder.lm.base",
    "Completion": "ponder.lm.base", "Engine": "ponder.lm.engine", "load_model": "ponder.lm.load",
    "ModelLoadError": "ponder.lm.hf",
    "Verifier": "ponder.verifiers", "get_verifier": "ponder.verifiers",
    "SearchConfig": "ponder.search", "get_method": "ponder.search", "METHODS": "ponder.search",
    "EvalConfig": "ponder.evaluate", "run_eval": "ponder.evaluate",
    "Trace": "ponder.trace", "Usage": "ponder.trace", "Node": "ponder.trace",
}



class _Subpackage:
    """A subpackage that is also a function of the API: `ponder.evaluate(...)` runs an evaluation and
    `ponder.evaluate.EvalConfig` is the subpackage's; `ponder.search(...)` runs one search. Both import on first
    use."""

    def __init__(self, package: str, module: str, function: str) -> None:
        self._package, self._module, self._function = package, module, function

    @property
    def __wrapped__(self) -> Any:  # the function: `help`, `inspect.signature` and editors show it
        return getattr(importlib.import_module(self._module), self._function)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__wrapped__.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self._package), name)

    def __repr__(self) -> str:
        return f"<{self._module}.{self._function}, and the package {self._package}>"


evaluate = _Subpackage("ponder.evaluate", "ponder.api", "evaluate")
search = _Subpackage("ponder.search", "ponder.search", "search")


class _Package(types.ModuleType):
    """`ponder` itself: the import system sets each subpackage it loads as an attribute of its parent, which would
    put the plain `ponder.evaluate` and `ponder.search` packages in place of the callables above; this keeps them."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, types.ModuleType) and isinstance(getattr(self, name, None), _Subpackage)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "METHODS", "Completion", "ConfigError", "Engine", "EvalConfig", "LanguageModel", "MissingExtra",
    "ModelLoadError", "NoReference", "Node", "PonderError", "Problem", "Request", "SamplingParams", "SearchConfig",
    "Task", "TaskError", "Trace", "Usage", "Verifier", "__version__", "clear_cache", "evaluate", "get_method",
    "get_task", "get_verifier", "load_model", "run_eval", "search", "shared_model", "shared_verifier", "solve",
]

if TYPE_CHECKING:
    from ponder.api import clear_cache, evaluate, solve
    from ponder.evaluate import EvalConfig, run_eval
    from ponder.lm.base import Completion, LanguageModel, Request, SamplingParams
    from ponder.lm.engine import Engine
    from ponder.lm.hf import ModelLoadError
    from ponder.lm.load import load_model, shared_model
    from ponder.search import METHODS, SearchConfig, get_method, search
    from ponder.tasks import NoReference, Problem, Task, TaskError, get_task
    from ponder.trace import Node, Trace, Usage
    from ponder.verifiers import Verifier, get_verifier, shared_verifier


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ponder' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
