"""`ponder bench gguf`: what a checkpoint exported as GGUF (`ponder export --gguf`) keeps, per tensor type.

A policy is exported at each outtype and run greedily in llama.cpp (`LlamaCppBackend`) on the task's first `prompts`
test problems; its texts are compared with the checkpoint's own in transformers (`HFBackend`). A step-tag PRM is
exported likewise and scores right and wrong steps (each test problem's reference solution, and the same with its
first result changed): llama.cpp's logits at every position go through the verifier's own formula (`step_scores`),
with llama.cpp's default float16 key-value cache and with a float32 one, and the table gives the largest difference
from the scores transformers computes. Greedy and deterministic: nothing is sampled.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder.errors import MissingExtra

try:
    import llama_cpp
except ImportError as err:
    raise MissingExtra("`ponder bench gguf`", "llama-cpp-python", "llamacpp") from err

from ponder.lm.base import Request, SamplingParams
from ponder.lm.gguf_export import OUTTYPES, export_gguf
from ponder.lm.hf import HFBackend
from ponder.lm.llamacpp import LlamaCppBackend
from ponder.tasks import ReferenceSolver, get_task, require
from ponder.verifiers.learned import LearnedVerifier, next_token_logprobs, step_margins, step_scores


def llama_cpp_step_scores(path: Path | str, verifier: LearnedVerifier, items: list[tuple[str, list[str]]],
                          kv_f32: bool = False) -> list[list[float]]:
    """The verifier's step scores for (prompt, steps) pairs, read from a GGUF export of its checkpoint in llama.cpp
    (one thread; keys and values stored in float32 when `kv_f32`, else in llama.cpp's default float16)."""
    cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if kv_f32 else {}
    model = llama_cpp.Llama(str(path), n_ctx=verifier.layout.max_length, logits_all=True, n_threads=1,
                            n_threads_batch=1, verbose=False, **cache)
    out = []
    try:
        for prompt, steps in items:
            encoded = verifier.layout.encode(prompt, steps)
            model.reset()
            model.eval(encoded.ids)
            logits = torch.from_numpy(np.array(model.scores[: len(encoded.ids)]))[None]
            out.append(step_scores(verifier.head, encoded, step_margins(verifier.layout, logits)[0],
                                   next_token_logprobs(logits, torch.tensor([encoded.ids]))[0]))
    finally:
        model.close()
    return out


def right_and_wrong_steps(task_name: str, problems: int) -> list[tuple[str, list[str]]]:
    """Per test problem, its reference solution and the same with the first step's result changed."""
    task = require(get_task(task_name), ReferenceSolver, "a PRM's right and wrong steps")
    items = []
    for problem in task.problems("test", limit=problems):
        steps = list(task.reference_solution(problem) or [])
        if steps:
            wrong = [steps[0].replace("= ", "= 1"), *steps[1:]]
            items += [(task.prompt(problem), steps), (task.prompt(problem), wrong)]
    return items


def gguf_benchmark(policies: list[str], prms: list[str], task_name: str = "game24", prompts: int = 20,
                   outtypes: list[str] | None = None) -> dict[str, Any]:
    outtypes = outtypes or list(OUTTYPES)
    task = get_task(task_name)
    requests = [Request(task.prompt(p), SamplingParams(max_tokens=160)) for p in task.problems("test", prompts)]
    items = right_and_wrong_steps(task_name, prompts // 2) if prms else []
    policy_rows, prm_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in policies:
            reference = HFBackend(name, threads=1).generate_batch(requests)
            for outtype in outtypes:
                exported = export_gguf(name, Path(tmp) / f"{Path(name).name}-{outtype}.gguf", outtype)
                backend = LlamaCppBackend(str(exported.path), threads=1, max_rows=len(requests))
                texts = backend.generate_batch(requests)
                backend.close()
                policy_rows.append({"model": name, "outtype": outtype, "mb": exported.bytes / 1e6,
                                    "same_text": sum(a.text == b.text for a, b in zip(texts, reference)),
                                    "same_tokens": sum(a.generated_tokens == b.generated_tokens
                                                       for a, b in zip(texts, reference)),
                                    "prompts": len(requests)})
        for name in prms:
            verifier = LearnedVerifier(name, batched=False)
            reference_scores = np.array([s for row in verifier.score_texts(items) for s in row])
            for outtype in outtypes:
                exported = export_gguf(name, Path(tmp) / f"{Path(name).name}-{outtype}.gguf", outtype)
                row: dict[str, Any] = {"model": name, "outtype": outtype, "mb": exported.bytes / 1e6,
                                       "scores": len(reference_scores)}
                for kv in ("f16", "f32"):
                    got = np.array([s for r in llama_cpp_step_scores(exported.path, verifier, items, kv == "f32")
                                    for s in r])
                    row[f"max_diff_kv_{kv}"] = float(np.abs(got - reference_scores).max())
                prm_rows.append(row)
    return {"task": task_name, "prompts": len(requests), "outtypes": outtypes, "policies": policy_rows,
            "prms": prm_rows}
