"""`ponder bench grpo`: greedy pass@1 of a policy before GRPO and after GRPO with each reward.

The starting policy and both GRPO variants (`{task}-grpo`: exact outcome reward; `{task}-grpo-process`: outcome
plus a PRM's aggregated step scores) are trained for the same number of steps from the same seed, then each is
evaluated the same way: greedy chain of thought on the first `problems` test problems, graded exactly.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ponder.evaluate.runner import greedy_accuracy
from ponder.train.grpo import GRPORecipe, train_grpo

VARIANTS = (("outcome", "{task}-grpo"), ("outcome+process", "{task}-grpo-process"))


def grpo_benchmark(task: str = "game24", steps: int | None = None, problems: int = 100, seed: int = 0,
                   prm: str = "", out: Path | None = None) -> dict[str, Any]:
    """Rows {variant, model, pass@1, steps, train_seconds, reward_start, reward_end}; models and eval runs go
    under `out` (a new temporary folder by default). `steps` None: the recipes' own; `prm` replaces the process
    recipe's PRM."""
    base = out or Path(tempfile.mkdtemp(prefix="ponder-bench-grpo-"))
    base.mkdir(parents=True, exist_ok=True)
    recipes = []
    for variant, name in VARIANTS:
        recipe = GRPORecipe.load(name.format(task=task))
        recipe = replace(recipe, train=replace(recipe.train, seed=seed))
        if prm and recipe.reward == "outcome+process":
            recipe = replace(recipe, prm=prm)
        recipes.append((variant, recipe))
    start_model = recipes[0][1].train.init or f"{task}-policy"
    rows = [{"variant": f"start ({start_model})", "model": start_model,
             "pass@1": greedy_accuracy(task, start_model, problems, seed, base / "eval-start"),
             "steps": 0, "train_seconds": 0.0, "reward_start": None, "reward_end": None}]
    for variant, recipe in recipes:
        model_dir = base / recipe.name
        summary = train_grpo(recipe, model_dir, steps=steps)
        rows.append({"variant": variant, "model": str(model_dir),
                     "pass@1": greedy_accuracy(task, str(model_dir), problems, seed, base / f"eval-{recipe.name}"),
                     "steps": summary["steps"], "train_seconds": summary["seconds"],
                     "reward_start": summary["reward_start"], "reward_end": summary["reward_end"]})
    return {"task": task, "problems": problems, "seed": seed, "out": str(base), "rows": rows}
