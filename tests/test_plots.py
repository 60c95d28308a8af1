"""`ponder plot`: accuracy against tokens from eval folders, one panel per difficulty; a folder that is not an eval
run is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys


def test_plot_reads_eval_summaries_and_refuses_other_folders(tmp_path):
    run = tmp_path / "eval"
    run.mkdir()
    rows = [{"method": m, "budget": b, "accuracy": a, "generated_tokens": t}
            for m, b, a, t in [("cot", 1, 0.3, 70), ("best_of_n", 4, 0.6, 300), ("best_of_n", 16, 0.8, 1200)]]
    (run / "summary.json").write_text(json.dumps(rows))
    (run / "summary-by-difficulty.json").write_text(json.dumps([{**r, "difficulty": d} for r in rows for d in (2, 3)]))
    out = tmp_path / "plot.png"
    done = subprocess.run([sys.executable, "-m", "ponder.cli", "plot", str(run), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "9 points" in done.stdout and out.stat().st_size > 20_000  # 3 overall + 3 per difficulty x 2
    bad = subprocess.run([sys.executable, "-m", "ponder.cli", "plot", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "no summary.json" in bad.stdout + bad.stderr
