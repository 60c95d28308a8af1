"""`ponder bench star`: STaR with and without rationalization, side by side.

Both runs start from the same original model (trained once on the seed set) and see the same problems with the
same seeds; the only difference is whether failures are retried with the answer as a hint.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ponder.collect.star import StarConfig, run_star


def star_benchmark(cfg: StarConfig, out: Path, base: Path | None = None) -> dict[str, Any]:
    """Rows {iteration, train_steps, kept and test accuracy with / without rationalization}. `base`: an original
    model trained earlier with the same seed-set settings (by default one is trained under `out`)."""
    with_hint = run_star(replace(cfg, rationalize=True), out / "rationalize", base=base)
    without = run_star(replace(cfg, rationalize=False), out / "no-rationalize",
                       base=base or out / "rationalize" / "base")
    rows = []
    for a, b in zip(with_hint["rows"], without["rows"], strict=True):
        rows.append({"iteration": a["iteration"], "train_steps": a["train_steps"],
                     "kept": f"{a['generated']}+{a['rationalized']}", "coverage": a["coverage"],
                     "wrong_step_kept": a["wrong_step_kept"], "accuracy": a["test_accuracy"],
                     "kept_plain": b["generated"], "coverage_plain": b["coverage"],
                     "accuracy_plain": b["test_accuracy"], "seconds": a["seconds"] + b["seconds"]})
    return {"config": with_hint["config"], "out": str(out), "rows": rows}
