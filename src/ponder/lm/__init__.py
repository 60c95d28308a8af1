"""Language models: the async interface, the batching engine, and the backends (transformers in process, GGUF
through llama.cpp in process, any OpenAI-compatible server over HTTP); `load_model` picks one from a name."""

from ponder.lm.base import Completion, LanguageModel, Metered, Request, SamplingParams

__all__ = ["Completion", "LanguageModel", "Metered", "Request", "SamplingParams"]
