"""Training recipes are small YAML files: shipped ones by name (`game24-policy`), others by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ponder.tasks.base import TaskError
from ponder.train.loop import TrainConfig


def load_recipe_yaml(name_or_path: str, package: str = "ponder.train") -> tuple[str, dict[str, Any]]:
    """(recipe name, parsed YAML mapping); a name is looked up among `package`'s shipped recipes (its `recipes/`
    folder), and an unknown one lists them."""
    path = Path(name_or_path)
    if recipe_source(name_or_path):
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


def recipe_source(name_or_path: str) -> str:
    """The YAML file a recipe is read from, as given; empty for a shipped recipe named by its name."""
    return name_or_path if Path(name_or_path).suffix in (".yaml", ".yml") else ""


def recipe_named(config: dict[str, Any]) -> tuple[str, str]:
    """(the recipe's YAML file, what a command names it by) for a model card: a shipped recipe by its name, any
    other by the path it was read from (`source`)."""
    if config.get("source"):
        return config["source"], config["source"]
    return f"src/ponder/train/recipes/{config['name']}.yaml", config["name"]


def shipped_out(config: dict[str, Any], out_dir: Path) -> str:
    """The `--out` of a card's command: a shipped recipe's checkpoint ships under `src/ponder/assets/`; any other
    stays where it was trained."""
    return str(out_dir) if config.get("source") else f"src/ponder/assets/{out_dir.name}"


def remake_section(prepare: list[str], command: str) -> str:
    """The model card's list of commands that remake a checkpoint from a clean clone: what makes its data and
    starting point (the recipe's `prepare:`), then its own training command."""
    steps = "".join(f"{i}. `{c}`\n" for i, c in enumerate([*prepare, command], start=1))
    return f"## Remake from a clean clone\n\n{steps}\n"


def rl_train_config(raw: dict[str, Any]) -> TrainConfig:
    """An RL recipe's `train:` mapping (GRPO's, PPO's) over RL-sized defaults (SFT's learning rate and warm-up are
    far too large for RL on a trained policy)."""
    return TrainConfig(**{"steps": 100, "batch_size": 32, "lr": 1e-5, "warmup": 5, "weight_decay": 0.0, **raw})


R = TypeVar("R")


def load_trainer_recipe(cls: type[R], name_or_path: str, kind: str) -> R:
    """An RL trainer's recipe (a dataclass with `name`, its knobs, `train` and `kind`, and a `check(where)`) from a
    shipped name or a YAML path, checked before any model loads; unknown keys and wrong types are TaskErrors."""
    name, raw = load_recipe_yaml(name_or_path)
    knobs = {k: v for k, v in raw.items() if k not in ("kind", "train")}
    try:
        recipe = cls(name=name, **knobs, train=rl_train_config(raw.get("train") or {}), kind=raw.get("kind", kind),
                     source=recipe_source(name_or_path))
        recipe.check(name_or_path)  # type: ignore[attr-defined]
    except TaskError:
        raise
    except (TypeError, ValueError) as err:  # unknown keys, wrong types
        raise TaskError(f"recipe {name_or_path}: malformed ({err})") from err
    return recipe
