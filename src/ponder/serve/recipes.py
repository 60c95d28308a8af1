"""Serving recipes: what a model name served by `ponder serve` runs.

A recipe file is YAML, a mapping from model name to recipe:

    game24-tot:
      task: game24
      method: tot_bfs          # a registered search method (`ponder methods`); default: the task's
      budget: 32               # the method's n
      verifier: game24-prm     # for methods that need one; default: the task's
      knobs: {breadth: 5}      # the method's knobs
      description: Tree of Thoughts over the shipped policy, judged by the shipped PRM

Other fields: `model` (the policy; default: the one the method needs on the task, else the task's), `style`
(gsm8k/math500 prompting), `aggregate`, `temperature`, `min_p`, `max_tokens` (a solution's token budget; default:
the task's) and `seed` (used when a request names none). The shipped recipes (`recipes/*.yaml` beside this module)
serve game24, arith and gsm8k.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ponder.errors import ConfigError
from ponder.search.base import field_types, fits

SHIPPED = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class Recipe:
    """One served model: a task, a policy, a search method, a verifier, a budget and the method's knobs."""

    name: str
    task: str
    method: str = ""  # "": the task's default method
    budget: int = 32
    verifier: str = ""  # "": the task's default verifier (used by the methods that need one)
    model: str = ""  # "": the policy the method needs on the task, else the task's default policy
    style: str = ""  # the prompting style of gsm8k/math500 ("": theirs)
    aggregate: str = "min"
    temperature: float = 0.8
    min_p: float = 0.001
    max_tokens: int | None = None  # a whole solution's token budget (None: the task's)
    seed: int = 0
    knobs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def parse(cls, name: str, values: object, where: str) -> Recipe:
        """The recipe `values` (a YAML mapping) declares; a ConfigError naming `where`, the recipe and the field
        for an unknown field, a missing task or a value of the wrong type."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: recipe {name!r} is not a mapping of fields")
        types = field_types(cls)
        known = [f.name for f in fields(cls) if f.name != "name"]
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: recipe {name!r} has an unknown field {key!r}; fields: {', '.join(known)}")
            if not fits(value, types[key]):
                raise ConfigError(f"{where}: recipe {name!r}: {key}={value!r} is not of type {types[key]}")
        if "task" not in values:
            raise ConfigError(f"{where}: recipe {name!r} names no task")
        return cls(name=name, **{k: float(v) if types[k] is float else v for k, v in values.items()})


def load_recipes(path: str | Path) -> list[Recipe]:
    """The recipes of one YAML file, in its order; a ConfigError when the file is missing or malformed."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read recipes {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping from model name to recipe")
    return [Recipe.parse(str(name), values, str(path)) for name, values in data.items()]


def shipped_recipes() -> list[Recipe]:
    """Every shipped recipe (game24, arith, gsm8k), by file name."""
    return [r for path in sorted(SHIPPED.glob("*.yaml")) for r in load_recipes(path)]
