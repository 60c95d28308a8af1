"""Evaluation: resumable runs of task x methods x budgets, with usage accounting and tables."""

from ponder.evaluate.runner import EvalConfig, run_eval

__all__ = ["EvalConfig", "run_eval"]
