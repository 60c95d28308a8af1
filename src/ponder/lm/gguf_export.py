"""A Llama causal LM with Ponder's character tokenizer (the shipped and trained policies, step-tag PRMs) as one GGUF
file that llama.cpp runs: `ponder export CHECKPOINT --gguf`.

- Hyper-parameters and tensors follow llama.cpp's `llama` architecture, tensor names from the `gguf` package's map
  of Hugging Face names. Q and K projections are reordered per head: Hugging Face's Llama rotates dimension i with
  i + head_dim/2 (`rotate_half`), llama.cpp's `llama` rope rotates the adjacent pair (2i, 2i + 1), so row i of a
  head goes to 2i and row i + head_dim/2 to 2i + 1 (the permutation llama.cpp's `convert_hf_to_gguf.py` applies).
- The tokenizer is llama.cpp's Unigram model (`t5`, SentencePiece's) over the same ids, no merges, no space prefix,
  no BOS or EOS added; a space is the piece `▁`, as SentencePiece escapes it. Every character of the vocabulary is
  one piece, special tokens (`<s>`, `</s>`, `<pad>`) are control tokens and added words (a PRM's step tag `ки`)
  user-defined ones, so text tokenises as `char_tokenizer` does it; a character outside the vocabulary is `<unk>`.
  Two differences remain, both outside the characters Ponder's models read: a run of unknown characters is one
  `<unk>` (the character tokenizer gives one per character), and `▁` typed in a text reads as a space. The other
  models llama.cpp offers do worse: its SentencePiece BPE (`llama`) aborts the process on a character it has no
  piece or byte for, and its byte-level BPE (`gpt2`) drops the character and refuses a file without merges.
- The Hugging Face `tokenizer.json` also goes in, under the GGUF key for it (`tokenizer.huggingface.json`), so that
  transformers' reader of the file gets the exact tokenizer back (`ponder.lm.hf.load_tokenizer`): transformers
  rebuilds a `t5` GGUF tokenizer with SentencePiece's defaults (a space prefix, newlines dropped).
- A step-tag PRM's head (`ponder_verifier` in its config.json) goes in under `ponder.verifier`, so that
  `LearnedVerifier` on the file scores steps as on the checkpoint.
- `outtype`: `f32` keeps the weights exactly (the shipped checkpoints are bfloat16); `bf16` too, in half the size;
  `f16` and `q8_0` (8-bit blocks of 32) round them. Norms stay float32, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ponder.errors import ConfigError
from ponder.lm.hf import GGUF_VERIFIER, loading_quietly, resolve_model

log = logging.getLogger(__name__)

OUTTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
SPACE = "\u2581"  # SentencePiece's escaped space


@dataclass(frozen=True)
class Exported:
    path: Path
    bytes: int
    tensors: int
    vocab: int
    outtype: str


def export_gguf(checkpoint: str, out: Path | str | None = None, outtype: str = "f32") -> Exported:
    """Write `checkpoint` (a shipped name or a directory) as a GGUF file, by default `NAME-OUTTYPE.gguf` in the current
    directory (or in `out` when it is a directory). Raises ConfigError for a checkpoint llama.cpp's `llama`
    architecture cannot hold or whose tokenizer is not Ponder's character tokenizer."""
    if outtype not in OUTTYPES:
        raise ConfigError(f"unknown outtype {outtype!r}; choose from {', '.join(OUTTYPES)}")
    directory, gguf_file = resolve_model(checkpoint)
    if gguf_file:
        raise ConfigError(f"{checkpoint} is a GGUF file already; export a checkpoint directory or a shipped name")
    config = json.loads((directory / "config.json").read_text())
    _check_architecture(directory, config)
    with loading_quietly():
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokens, types = _vocabulary(directory, tokenizer, model.config.vocab_size)
    path = Path(out) if out else Path(".")
    if path.is_dir():
        path = path / f"{directory.name}-{outtype}.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(directory.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(OUTTYPES[outtype][1])
    _write_tokenizer(writer, tokenizer, tokens, types)
    if "ponder_verifier" in config:  # a step-tag PRM's head, for `LearnedVerifier` on the file
        writer.add_string(GGUF_VERIFIER, json.dumps(config["ponder_verifier"]))
    n = _write_tensors(writer, model, cfg, head_dim, OUTTYPES[outtype][0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = path.stat().st_size
    log.debug("wrote %s: %d tensors, %d tokens, %s, %.1f MB", path, n, len(tokens), outtype, size / 1e6)
    return Exported(path, size, n, len(tokens), outtype)


def _check_architecture(directory: Path, config: dict) -> None:
    """What llama.cpp's `llama` architecture holds as the exporter writes it: a causal LM, SiLU gates, plain rope."""
    arch = (config.get("architectures") or ["?"])[0]
    if config.get("model_type") != "llama" or arch != "LlamaForCausalLM":
        raise ConfigError(f"{directory} is a {arch} ({config.get('model_type', 'no model_type')}); GGUF export takes "
                          "a Llama causal LM (LlamaForCausalLM: a policy or a step-tag PRM)")
    if config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{directory} uses {config['hidden_act']!r} activations; llama.cpp's Llama uses silu")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ConfigError(f"{directory} scales its rope ({rope}); GGUF export writes plain rope only")


def _rope_theta(config: dict) -> float:
    return float((config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0)


def _vocabulary(directory: Path, tokenizer: PreTrainedTokenizerBase, rows: int) -> tuple[list[str], list[int]]:
    """The pieces and llama.cpp token types of `char_tokenizer`'s vocabulary, one per embedding row; anything but a
    one-character-per-token tokenizer is refused (llama.cpp's own converter handles those)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    vocab = tokenizer.get_vocab()
    chars = [t for t in vocab if t not in added]
    if spec["model"]["type"] != "WordLevel" or spec.get("normalizer") or any(len(t) != 1 for t in chars):
        raise ConfigError(f"{directory}'s tokenizer is not Ponder's character tokenizer (one token per character); "
                          "convert other tokenizers with llama.cpp's convert_hf_to_gguf.py")
    if sorted(vocab.values()) != list(range(len(vocab))) or len(vocab) != rows:
        raise ConfigError(f"{directory}'s tokenizer has {len(vocab)} ids for {rows} embedding rows")
    tokens, types = [""] * rows, [0] * rows
    for token, i in vocab.items():
        tokens[i] = SPACE if token == " " else token
        if token == tokenizer.unk_token:
            types[i] = gguf.TokenType.UNKNOWN
        elif token in added:
            types[i] = gguf.TokenType.CONTROL if added[token] else gguf.TokenType.USER_DEFINED
        else:
            types[i] = gguf.TokenType.NORMAL
    return tokens, types


def _write_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, tokens: list[str],
                     types: list[int]) -> None:
    writer.add_tokenizer_model("t5")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))  # one character per piece: a single segmentation, scores unused
    writer.add_token_types(types)
    for token, add in ((tokenizer.bos_token_id, writer.add_bos_token_id), (tokenizer.eos_token_id,
                       writer.add_eos_token_id), (tokenizer.unk_token_id, writer.add_unk_token_id),
                       (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token is not None:
            add(token)
    writer.add_add_bos_token(False)  # `char_tokenizer` adds none
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_remove_extra_whitespaces(False)
    writer.add_string(gguf.Keys.Tokenizer.HF_JSON, tokenizer.backend_tokenizer.to_str())


def rope_interleaved(weight: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Q or K rows (or biases) of `heads` heads, from rotate-half pairs (i, i + head_dim/2) to adjacent ones
    (2i, 2i + 1)."""
    return weight.reshape(heads, 2, head_dim // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def _write_tensors(writer: gguf.GGUFWriter, model: torch.nn.Module, cfg: object, head_dim: int,
                   qtype: gguf.GGMLQuantizationType) -> int:
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)  # type: ignore[attr-defined]
    tied = getattr(cfg, "tie_word_embeddings", False)
    n = 0
    for hf_name, tensor in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConfigError(f"no llama.cpp tensor for {hf_name}: GGUF export takes plain Llama checkpoints")
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            tensor = rope_interleaved(tensor, cfg.num_attention_heads, head_dim)  # type: ignore[attr-defined]
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            tensor = rope_interleaved(tensor, cfg.num_key_value_heads, head_dim)  # type: ignore[attr-defined]
        data = tensor.detach().float().numpy()
        kind = qtype if data.ndim == 2 else gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
            log.info("%s: rows of %d do not split into 8-bit blocks; kept as float32", name, data.shape[-1])
            kind = gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        n += 1
    return n

