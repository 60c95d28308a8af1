"""Accuracy against compute: one PNG from one or more `ponder eval` folders.

Each (method, budget) row of a folder's `summary.json` is a point at its mean generated tokens per problem and its
top-1 accuracy; a method's budgets are joined by a line. Where the folders graded difficulty
(`summary-by-difficulty.json`, arith), each difficulty gets its own panel beside the overall one. Rows of the same
method from different folders are told apart by the folder's name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError


def load(folders: list[Path]) -> list[dict[str, Any]]:
    """Every summary row of the folders, each with `series` (method, and folder when several) and `group`."""
    rows = []
    for folder in folders:
        summary = folder / "summary.json"
        if not summary.is_file():
            raise ConfigError(f"{folder} has no summary.json (is it a `ponder eval` folder?)")
        tag = f" ({folder.name})" if len(folders) > 1 else ""
        rows += [{**r, "series": r["method"] + tag, "group": "all"} for r in _summary_rows(summary)]
        graded = folder / "summary-by-difficulty.json"
        if graded.is_file():
            rows += [{**r, "series": r["method"] + tag, "group": f"difficulty {r['difficulty']}"}
                     for r in _summary_rows(graded, "difficulty")]
    return rows


def _summary_rows(path: Path, *keys: str) -> list[dict[str, Any]]:
    """A summary file's rows, each with a method, a budget, accuracy and generated tokens (and `keys`)."""
    need = ("method", "budget", "accuracy", "generated_tokens", *keys)
    try:
        rows = json.loads(path.read_text())
        if isinstance(rows, list) and all(isinstance(r, dict) and all(k in r for k in need) for r in rows):
            return rows
        problem = f"expected a list of rows with {', '.join(need)}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = str(err)
    raise ConfigError(f"{path} is not a `ponder eval` summary ({problem}); rerun `ponder eval` into its folder")


def plot_compute(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r["group"] for r in rows))
    names = list(dict.fromkeys(r["series"] for r in rows))
    colours = plt.get_cmap("tab20")
    cols = min(len(groups), 4)  # panels in rows of four: the overall one first, then one per difficulty
    grid = -(-len(groups) // cols)
    fig, axes = plt.subplots(grid, cols, figsize=(4.5 * cols + 3.0, 3.8 * grid + 0.6), squeeze=False, sharey=True)
    for ax, group in zip(axes.flat, groups):
        for series in dict.fromkeys(r["series"] for r in rows if r["group"] == group):
            pts = sorted((r["generated_tokens"], r["accuracy"], r["budget"]) for r in rows
                         if r["group"] == group and r["series"] == series)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=series,
                    color=colours(names.index(series) % 20))
            for x, y, n in pts:
                ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per problem (log)")
        ax.set_title(group)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("top-1 accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
