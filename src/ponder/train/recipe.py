"""Training recipes are small YAML files: shipped ones by name (`game24-policy`), others by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ponder.tasks.base import TaskError


def load_recipe_yaml(name_or_path: str, package: str = "ponder.train") -> tuple[str, dict[str, Any]]:
    """(recipe name, parsed YAML mapping); a name is looked up among `package`'s shipped recipes (its `recipes/`
    folder), and an unknown one lists them."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        try:
            text = path.read_text()
        except OSError as err:
            raise TaskError(f"cannot read recipe {path}: {err.strerror}") from err
    else:
        shipped = resources.files(package).joinpath(f"recipes/{name_or_path}.yaml")
        if not shipped.is_file():
            known = sorted(p.name[:-5] for p in resources.files(package).joinpath("recipes").iterdir()
                           if p.name.endswith(".yaml"))
            raise TaskError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(known)}")
        text = shipped.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TaskError(f"recipe {name_or_path}: malformed YAML ({err})") from err
    if not isinstance(raw, dict) or "task" not in raw:
        raise TaskError(f"recipe {name_or_path}: expected a mapping with at least `task:`")
    return path.stem, raw


def remake_section(prepare: list[str], command: str) -> str:
    """The model card's list of commands that remake a checkpoint from a clean clone: what makes its data and
    starting point (the recipe's `prepare:`), then its own training command."""
    steps = "".join(f"{i}. `{c}`\n" for i, c in enumerate([*prepare, command], start=1))
    return f"## Remake from a clean clone\n\n{steps}\n"
