"""Language models: the async interface, the in-process Hugging Face backend and the batching engine."""

from ponder.lm.base import Completion, LanguageModel, Metered, Request, SamplingParams

__all__ = ["Completion", "LanguageModel", "Metered", "Request", "SamplingParams"]
