"""In-process llama.cpp backend: a GGUF file run by llama.cpp's own quantized CPU kernels (llama-cpp-python's
low-level API), under the continuous-batching `Engine`.

- Rows are sequences of one llama.cpp context, and one `llama_decode` runs a decoding step for all of them, the
  logits of all rows read as one array. Each sequence has its own stream of key-value cells (`kv_unified=False`,
  `n_ctx` positions per row), so a row's attention reads only its own cells; in one shared stream every row would
  attend over all rows' cells (masked), slower at 32 rows. llama.cpp runs each run of consecutive sequence ids of a
  batch as its own forward pass, so the rows are kept on ids 0..rows-1: new rows take the lowest free ids, and rows
  above move down into the ids that finished rows leave (`seq_cp`, which between streams copies a whole stream).
- Sampling is done in Python from the logits with `ponder.lm.sampling`, as `HFBackend` does: a request's seed gives
  the same uniforms (n = 1) or the same Gumbel noise (`Distinct`, n > 1), so its text depends only on its seed,
  whatever batch it lands in and whenever it arrives. For the same seed the text can differ from HFBackend's: its
  logits come from the de-quantized float32 weights, llama.cpp's from the quantized ones. Greedy text is that of
  llama-cpp-python's `Llama.create_completion` (flash attention off, as there: on the CPU it computes in half
  precision and moves logits by up to ~0.5).
- Prefill: one `llama_decode` per distinct new prompt. llama.cpp's attention gives a token computed alone in its
  sequence other logits than one computed with more tokens of it, so a prompt's forward passes must not depend on
  the prompts it is admitted with. A prompt equal to another of the same admission copies that row's cells (n
  samples sent as n requests compute their prompt once). A finished row's prompt cells stay in its sequence while
  no row needs the id, and a prompt that shares at least `MIN_REUSE` tokens with them (the next step of a step-level
  search extends the prompt before it) takes them over and computes only the rest (at least its last two tokens).
  Only cells a prefill computed are reused, so a text does not depend on what ran before. A request with n > 1
  prefills one row; its beams branch by copying their parent's sequence.
- `next_token` runs its prompts on sequences no row holds, which then stay idle like finished rows.
- Threads: llama.cpp's workers wait for each other at every operation of the graph, so on cores that other
  processes also use two threads can be far slower than one; `threads` sets them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ponder.errors import MissingExtra

try:
    import llama_cpp
    from llama_cpp._internals import LlamaContext, LlamaModel
    from llama_cpp._logger import logger as llama_logger
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
except ImportError as err:
    raise MissingExtra("the llama.cpp backend", "llama-cpp-python", "llamacpp") from err

from ponder.errors import ConfigError, ModelLoadError
from ponder.lm.base import Backend, Completion, ContextLengthError, Message, Request, prompt_ids
from ponder.lm.sampling import Distinct, Knobs, completion, draws, finish_reason, sample, share_time, truncate

BATCH = 2048  # tokens per llama_decode call (a prefill of more is split)
UBATCH = 512  # tokens per forward pass inside llama.cpp
SPARE = 4  # sequences beyond the rows: next_token's prompt, and idle cells kept for prompts that extend them
MIN_REUSE = 16  # a finished row's cells are taken over when they hold at least this many of a new prompt's tokens


class _Batch:
    """A `llama_batch` over numpy arrays, one sequence per token, filled with vectorised writes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.token = np.zeros(size, np.int32)
        self.pos = np.zeros(size, np.int32)
        self.seq = np.zeros(size, np.int32)
        self.logits = np.zeros(size, np.int8)
        self._n_seq = np.ones(size, np.int32)
        self._seq_ptrs = (ctypes.c_void_p * size)(*range(self.seq.ctypes.data, self.seq.ctypes.data + 4 * size, 4))
        self.struct = llama_cpp.llama_batch(
            0, self.token.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token)), None,
            self.pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            self._n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            ctypes.cast(self._seq_ptrs, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id))),
            self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))


def _piece(vocab: llama_cpp.llama_vocab_p, token: int) -> bytes:
    """A token's text as llama.cpp writes it; control tokens (end of turn, ...) write nothing."""
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[: max(n, 0)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """llama.cpp's log below errors unprinted for a while: building a model or a context logs many debug lines
    (sched_reserve, llama_graph_n_input_tensors, ...) to stderr whatever `verbose` says, through
    llama-cpp-python's logger, whose level is restored after."""
    before = llama_logger.level
    llama_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        llama_logger.setLevel(before)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Torch on `n` threads for a while: a step's sampling is small work that on two threads waits for a second
    core (held by llama.cpp's workers or another process) longer than it computes."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(eq=False)
class _Live:
    """An admitted request: its prompt, its sampling state and what it has cost so far."""

    request: Request
    prompt: tuple[int, ...]
    uniforms: torch.Tensor | None  # n = 1: the request's own uniforms, one per token it may generate
    group: Distinct | None  # n > 1
    cached: int = 0  # prompt tokens read from cells computed before
    seconds: float = 0.0


@dataclass(eq=False)
class _Row:
    key: int  # the request
    seq: int  # the llama.cpp sequence holding its cells: the prompt and `out`
    out: list[int] = field(default_factory=list)  # the tokens generated and fed to the model
    logp: float = 0.0  # their log-probability under the model (temperature 1, nothing truncated)
    beam: int = 0  # a group's row: its place among the group's beams, the order `Distinct` keeps them in


class LlamaCppBackend(Backend):
    """`max_rows`: the most rows at once (run the `Engine` with no more); `n_ctx`: positions of each row, its prompt
    and completion (default: the model's trained context, at most 2048). Memory for keys and values: (max_rows +
    SPARE) * n_ctx positions. `threads`: llama.cpp's threads (default: torch's)."""

    def __init__(self, path: str, threads: int | None = None, max_rows: int = 64, n_ctx: int | None = None) -> None:
        super().__init__()
        if not Path(path).is_file():
            raise ModelLoadError(f"no GGUF file at {path}")
        n_seq = max_rows + SPARE
        if max_rows < 1 or n_seq > llama_cpp.llama_max_parallel_sequences():
            raise ConfigError(f"max_rows must be 1 to {llama_cpp.llama_max_parallel_sequences() - SPARE}")
        llama_cpp.llama_backend_init()
        self.name = Path(path).stem
        self.max_rows = max_rows
        with _quiet():
            self.model = LlamaModel(path_model=path, params=LlamaModel.default_params(), verbose=False)
        n_ctx = -(-min(n_ctx or 2048, self.model.n_ctx_train()) // 256) * 256  # llama.cpp pads to 256 anyway
        params = LlamaContext.default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * n_seq, n_seq, False
        params.n_batch, params.n_ubatch = BATCH, UBATCH
        params.n_threads = params.n_threads_batch = threads or torch.get_num_threads()
        params.no_perf = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        with _quiet():
            self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self.ctx.ctx)
        self._mem = self.ctx.memory
        self._batch = _Batch(BATCH)
        vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self._pieces = [_piece(vocab, t) for t in range(self.n_vocab)]
        self.eos = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self._add_bos = self.model.add_bos_token()
        template = self.model.metadata().get("tokenizer.chat_template")
        special = [self.model.token_eos(), self.model.token_bos()]
        eos, bos = (self.model.token_get_text(t) if t >= 0 else "" for t in special)
        self._chat = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos) if template else None
        # the engine sizes a request (`cost`) just before admitting it: both read one tokenization
        self._token_ids = functools.lru_cache(maxsize=4096)(
            lambda text: tuple(self.model.tokenize(text.encode(), add_bos=self._add_bos, special=True)))
        self._rng = random.Random(0)
        self._next_key = itertools.count()
        self._n_seq = n_seq
        self._live: dict[int, _Live] = {}
        self._reserved = 0  # rows the live requests may take (n each)
        self._rows: list[_Row] = []
        self._logits = np.empty((0, self.n_vocab), np.float32)  # of each row's next token, in `_rows` order
        self._free = set(range(n_seq))  # empty sequences
        self._idle: dict[int, np.ndarray] = {}  # sequences no row holds -> the prompt their cells hold, LRU first

    def encode(self, text: str) -> tuple[int, ...]:
        return self._token_ids(text)

    def text(self, tokens: Iterable[int]) -> str:
        return b"".join(self._pieces[t] for t in tokens).decode("utf-8", errors="ignore")

    @property
    def keys(self) -> list[int]:
        return list(self._live)

    def close(self) -> None:
        self.ctx.close()  # llama.cpp's context (its cache) and weights, freed now rather than whenever Python collects
        self.model.close()

    def cost(self, request: Request) -> int:
        return len(self.encode(request.prompt)) + request.n * request.params.max_tokens

    def chat_prompt(self, messages: list[Message]) -> str | None:
        return None if self._chat is None else self._chat(messages=messages).prompt

    def admit(self, requests: list[Request]) -> list[int | Exception]:
        out: list[int | Exception] = []
        new: list[int] = []
        for request in requests:
            ids = prompt_ids(self.encode, request.prompt, self.n_ctx, self.name)
            if isinstance(ids, Exception):
                out.append(ids)
            elif self._reserved + request.n > self.max_rows:
                out.append(ValueError(f"{self.name} has {self.max_rows} rows and {self._reserved} are taken: run the "
                                      f"engine with max_rows <= {self.max_rows}"))
            else:
                key = next(self._next_key)
                self._live[key] = _Live(request, ids, *draws(request, self._rng))
                self._reserved += request.n
                out.append(key)
                new.append(key)
        if new:
            try:
                self._prefill(new)
            except BaseException:  # a failed prefill leaves nothing behind: the running rows go on as they were
                self.drop(new)
                raise
        return out

    def drop(self, keys: Iterable[int]) -> None:
        gone = {k for k in keys if k in self._live}
        if not gone:
            return
        keep = [b for b, row in enumerate(self._rows) if row.key not in gone]
        for row in self._rows:
            if row.key in gone:
                self._release(row.seq)
        self._rows, self._logits = [self._rows[b] for b in keep], self._logits[keep]
        for key in gone:
            self._reserved -= self._live.pop(key).request.n

    # -- sequences ---------------------------------------------------------------------------------------------------

    def _acquire(self) -> int:
        """An empty sequence: the lowest free id, else the least recently used idle one, emptied."""
        if self._free:
            seq = min(self._free)
            self._free.remove(seq)
            return seq
        seq = next(iter(self._idle))
        del self._idle[seq]
        llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        return seq

    def _release(self, seq: int, held: tuple[int, ...] | None = None) -> None:
        """A sequence no row needs: kept idle with the tokens its cells hold, or emptied."""
        if held:
            self._idle[seq] = np.asarray(held, np.int32)
        else:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
            self._free.add(seq)

    def _retire(self, seq: int, prompt: tuple[int, ...]) -> None:
        """A finished row's sequence: its prompt's cells stay idle for a prompt that extends them. The cells of the
        tokens it generated go: computed one token per forward pass, they differ from a prefill's (logits that read
        them move by up to ~1), and reused they would make a text depend on what ran before."""
        llama_cpp.llama_memory_seq_rm(self._mem, seq, len(prompt), -1)
        self._release(seq, prompt)

    def _claim(self, prompt: tuple[int, ...]) -> tuple[int, int]:
        """A sequence for a new prompt and how many of its first tokens the cells hold: the idle sequence sharing
        the longest prefix with it (at least MIN_REUSE tokens), cut to that prefix; else an empty one. The last two
        tokens are always computed: a prompt's last token, computed alone, would get other logits than in a
        prefill from scratch."""
        ids = np.asarray(prompt[:-2], np.int32)
        best, length = -1, 0
        for seq, held in self._idle.items():
            n = min(len(held), len(ids))
            same = held[:n] == ids[:n]
            shared = n if same.all() else int(same.argmin())
            if shared > length:
                best, length = seq, shared
        if length < MIN_REUSE:
            return self._acquire(), 0
        del self._idle[best]
        llama_cpp.llama_memory_seq_rm(self._mem, best, length, -1)
        return best, length

    def _copy(self, src: int, dst: int) -> None:
        """dst (empty) gets src's cells; llama.cpp copies the stream's data at its next decode, before computing."""
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def _compact(self, rows: list[_Row]) -> None:
        """Put the rows on sequence ids 0..len(rows)-1: each row above takes the lowest id below that no row holds;
        an idle sequence there moves to a free id above, or is emptied when there is none."""
        n = len(rows)
        held = {r.seq for r in rows}
        holes = [s for s in range(n) if s not in held]
        for hole, row in zip(holes, sorted((r for r in rows if r.seq >= n), key=lambda r: r.seq)):
            if hole in self._idle:
                tokens = self._idle.pop(hole)
                above = [s for s in self._free if s >= n]
                if above:
                    self._free.remove(min(above))
                    self._copy(hole, min(above))
                    self._idle[min(above)] = tokens
                llama_cpp.llama_memory_seq_rm(self._mem, hole, -1, -1)
            else:
                self._free.remove(hole)
            self._copy(row.seq, hole)
            self._release(row.seq)
            row.seq = hole

    def _reset(self) -> None:
        """Forget every request and every cell (after a failed step, whose requests the engine drops)."""
        llama_cpp.llama_memory_clear(self._mem, True)
        self._live.clear()
        self._reserved = 0
        self._rows, self._logits = [], self._logits[:0]
        self._free, self._idle = set(range(self._n_seq)), {}

    def _decode(self, tokens: np.ndarray, pos: np.ndarray, seqs: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Feed tokens to their sequences at their positions, BATCH at a time; the logits after the `wanted` ones
        (a boolean mask), in order: [wanted, vocabulary]."""
        batch, outs = self._batch, []
        for i in range(0, len(tokens), batch.size):
            j = min(i + batch.size, len(tokens))
            batch.token[: j - i], batch.pos[: j - i], batch.seq[: j - i] = tokens[i:j], pos[i:j], seqs[i:j]
            batch.logits[: j - i] = wanted[i:j]
            batch.struct.n_tokens = j - i
            code = llama_cpp.llama_decode(self.ctx.ctx, batch.struct)
            if code != 0:
                raise RuntimeError(f"llama_decode returned {code}")
            if k := int(wanted[i:j].sum()):
                outs.append(np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx.ctx), shape=(k, self.n_vocab))
                            .copy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _prompts(self, prompts: list[tuple[int, ...]], seqs: list[int], starts: list[int]) -> np.ndarray:
        """Compute each prompt from `starts[i]` on in sequence `seqs[i]`: the logits after each. One prompt per
        llama_decode, so that its forward passes do not depend on the prompts it comes with: llama.cpp's attention
        gives a token computed alone in its sequence other logits than one computed with more of its sequence."""
        out = np.empty((len(prompts), self.n_vocab), np.float32)
        for i, (prompt, seq, start) in enumerate(zip(prompts, seqs, starts)):
            wanted = np.zeros(len(prompt) - start, bool)
            wanted[-1] = True
            out[i] = self._decode(np.asarray(prompt[start:], np.int32), np.arange(start, len(prompt), dtype=np.int32),
                                  np.full(len(wanted), seq, np.int32), wanted)[0]
        return out

    # -- prefill -----------------------------------------------------------------------------------------------------

    def _prefill(self, keys: list[int]) -> None:
        """One row per new request (a group's beams branch from it later). A prompt equal to an earlier one of this
        admission copies that row; the others take over an idle sequence they extend, or an empty one."""
        start = time.perf_counter()
        leaders: dict[tuple[int, ...], int] = {}  # prompt -> index of the row that computes it
        rows: list[_Row] = []
        try:
            for key in keys:
                lv = self._live[key]
                if lv.prompt not in leaders:
                    leaders[lv.prompt] = len(rows)
                    seq, lv.cached = self._claim(lv.prompt)
                    rows.append(_Row(key, seq))
            computing = list(rows)
            for key in keys:
                lv = self._live[key]
                if rows[leaders[lv.prompt]].key != key:  # the same prompt as an earlier request: its cells are copied
                    rows.append(_Row(key, self._acquire()))
                    lv.cached = len(lv.prompt)
            logits = self._prompts([self._live[r.key].prompt for r in computing], [r.seq for r in computing],
                                   [self._live[r.key].cached for r in computing])
        except BaseException:  # the sequences taken so far are emptied and freed
            for row in rows:
                self._release(row.seq)
            raise
        source = [leaders[self._live[r.key].prompt] for r in rows]
        for row, b in zip(rows[len(computing) :], source[len(computing) :]):
            self._copy(rows[b].seq, row.seq)
        self._rows += rows
        self._logits = np.concatenate([self._logits, logits[source]])
        work = {r.key: len(self._live[r.key].prompt) - self._live[r.key].cached for r in computing}
        seconds = time.perf_counter() - start
        for key, tokens in work.items():
            self._live[key].seconds += seconds * tokens / sum(work.values())

    # -- decoding ------------------------------------------------------------------------------------------------------

    def step(self) -> dict[int, list[Completion]]:
        if not self._rows:
            return {}
        try:
            with _torch_threads(1):
                return self._step()
        except BaseException:
            self._reset()
            raise

    def _step(self) -> dict[int, list[Completion]]:
        start = time.perf_counter()
        rows, live = self._rows, self._live
        logits = torch.from_numpy(self._logits)
        lse = torch.logsumexp(logits, -1)  # for each completion's log-probability (a policy's prior in MCTS)
        finished: dict[int, list[Completion]] = {}
        going: list[tuple[_Row, int]] = []  # the rows that decode next, with their next token
        sampled = [b for b, r in enumerate(rows) if live[r.key].group is None]
        if sampled:
            lvs = [live[rows[b].key] for b in sampled]
            params = [lv.request.params for lv in lvs]
            uniforms = torch.tensor([float(u[min(len(rows[b].out), len(u) - 1)])
                                     for b, lv in zip(sampled, lvs) for u in [lv.uniforms] if u is not None],
                                    dtype=torch.float64)
            tokens = sample(logits[sampled], Knobs.of(params), uniforms)
            gains = (logits[sampled, tokens] - lse[sampled]).tolist()
            for b, lv, token, gain in zip(sampled, lvs, tokens.tolist(), gains):
                row = rows[b]
                row.logp += gain
                out = [*row.out, token]
                reason = self._finished(out, lv)
                if reason is None:
                    going.append((row, token))
                else:
                    self._retire(row.seq, lv.prompt)
                    finished[row.key] = [self._complete(out, row.logp, lv, reason, cached=lv.cached)]
        for key in dict.fromkeys(r.key for r in rows if live[r.key].group is not None):
            members = sorted((b for b, r in enumerate(rows) if r.key == key), key=lambda b: rows[b].beam)
            going += self._branch(key, members, logits, lse, finished)
        self._rows = [r for r, _ in going]
        if going:
            self._compact(self._rows)
            going.sort(key=lambda g: g[0].seq)
            self._rows = [r for r, _ in going]
            pos = [len(live[r.key].prompt) + len(r.out) for r in self._rows]
            for row, token in going:
                row.out.append(token)
            self._logits = self._decode(np.array([t for _, t in going], np.int32), np.array(pos, np.int32),
                                        np.array([r.seq for r in self._rows], np.int32), np.ones(len(going), bool))
        else:
            self._logits = self._logits[:0]
        self._charge(finished, start, [r.key for r in self._rows])
        return finished

    def _branch(self, key: int, members: list[int], logits: torch.Tensor, lse: torch.Tensor,
                finished: dict[int, list[Completion]]) -> list[tuple[_Row, int]]:
        """One step of a group's beams: the children that go on, each in a row of its own (a parent's first child
        keeps its sequence, the others copy it); a finished group's completions go into `finished`."""
        lv, rows = self._live[key], self._rows
        group, p = lv.group, lv.request.params
        assert group is not None
        scaled = truncate(logits[members].double() / (p.temperature or 1.0), Knobs.of([p]))
        outcomes, children = [], []
        for parent, token in group.step(scaled.log_softmax(-1), noisy=p.temperature > 0):
            b = members[parent]
            out, logp = [*rows[b].out, token], rows[b].logp + float(logits[b, token] - lse[b])
            reason = self._finished(out, lv)
            outcomes.append(((out, logp), reason))
            if reason is None:
                children.append((rows[b], token, logp))
        group.advance(outcomes)
        parents = {row.seq for row, _, _ in children}
        for b in members:
            if rows[b].seq not in parents:
                self._retire(rows[b].seq, lv.prompt)
        going, taken = [], set()
        for beam, (parent, token, logp) in enumerate(children):
            seq = parent.seq
            if seq in taken:
                seq = self._acquire()
                self._copy(parent.seq, seq)
            taken.add(seq)
            going.append((_Row(key, seq, list(parent.out), logp, beam), token))
        if group.done:  # the first drawn computed the prompt; the others shared it
            finished[key] = [self._complete(out, logp, lv, reason, cached=lv.cached if i == 0 else len(lv.prompt))
                             for i, ((out, logp), reason) in enumerate(group.completions())]
        return going

    def _charge(self, finished: dict[int, list[Completion]], start: float, going: list[int]) -> None:
        """Split the step's time among the rows that decoded; forget finished requests."""
        for lv in share_time(self._live, finished, time.perf_counter() - start, going):
            self._reserved -= lv.request.n

    def _finished(self, out: list[int], lv: _Live) -> str | None:
        return finish_reason(out, lv.request.params, self.eos, self.text, self.n_ctx - len(lv.prompt))

    def _complete(self, out: list[int], logprob: float, lv: _Live, reason: str, cached: int) -> Completion:
        return completion(self.text(out), len(out), len(lv.prompt), lv.request.params.stop, reason, cached, logprob)

    # -- next-token probabilities ------------------------------------------------------------------------------------

    def next_token_logits(self, prompts: list[str]) -> torch.Tensor:
        """[prompts, vocabulary]: the logits for the token after each prompt, computed one prompt at a time on a
        sequence no row holds. Its cells then stay idle like a finished row's: the next prompt that extends them (a
        judge's question about a sibling step, or about the next step) computes only the rest."""
        ids = [self.encode(p) for p in prompts]
        for p in ids:
            if not p:
                raise ValueError("an empty prompt gives the model nothing to continue")
            if len(p) > self.n_ctx:
                raise ContextLengthError(f"a prompt of {len(p)} tokens does not fit {self.name}'s context of "
                                         f"{self.n_ctx} positions per row")
        out = np.empty((len(ids), self.n_vocab), np.float32)
        with self.lock:
            for i, prompt in enumerate(ids):
                seq, start = self._claim(prompt)
                try:
                    out[i] = self._prompts([prompt], [seq], [start])[0]
                except BaseException:
                    self._release(seq)
                    raise
                self._release(seq, prompt)
        return torch.from_numpy(out)

    def first_token(self, word: str) -> int:
        ids = self.model.tokenize(word.encode(), add_bos=False, special=True)
        if not ids:
            raise ValueError(f"the tokenizer encodes {word!r} to nothing")
        return ids[0]
