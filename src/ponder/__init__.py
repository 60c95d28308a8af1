"""Ponder: spend compute at test time to make language models reason better."""

__version__ = "0.1.0"
