"""Read a Bark checkpoint in either layout into configs and state dicts.

Layouts:
- Suno's original files: `text.pt`, `coarse.pt`, `fine.pt` (small) or
  `text_2.pt`, `coarse_2.pt`, `fine_2.pt` (large), each a dict with
  `model_args` and `model` (keys may carry `_orig_mod.`). EnCodec comes from
  the `encodec` package's `encodec_24khz-*.th` or a Hugging Face EnCodec model.
- Hugging Face `transformers` (`suno/bark`, `suno/bark-small`): `config.json`
  with the four sub-configs and one checkpoint holding `semantic.*`,
  `coarse_acoustics.*`, `fine_acoustics.*` and `codec_model.*`.

Every state dict comes out in the Suno naming of `gpt.py` / `encodec.py`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bark_onnx.runtime.constants import SUNO_FILES
from bark_onnx.runtime.model.config import CodecConfig, GPTConfig
from bark_onnx.runtime.errors import CheckpointError
from bark_onnx.runtime.model.voices import VOICE_KEYS, Voice, load_voice_arrays, load_voice_file

from .codec_checkpoint import codec_config_from_hf, codec_state_to_ours, find_codec
from .weights import (
    HF_WEIGHT_FILES, find_hf_weights, hub_snapshot, load_weight_file, looks_like_hub_id, read_json, torch_load,
)

logger = logging.getLogger(__name__)

HF_PREFIX = {"semantic": "semantic.", "coarse": "coarse_acoustics.", "fine": "fine_acoustics."}
HF_CONFIG_KEY = {"semantic": "semantic_config", "coarse": "coarse_acoustics_config", "fine": "fine_acoustics_config"}
TOKENIZER_HUB_ID = "bert-base-multilingual-cased"
TEXT_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")

# Hugging Face Bark names -> Suno names (applied in order)
_HF_TO_SUNO = [
    (r"^input_embeds_layer\.", "transformer.wte."),
    (r"^input_embeds_layers\.", "transformer.wtes."),
    (r"^position_embeds_layer\.", "transformer.wpe."),
    (r"^layernorm_final\.", "transformer.ln_f."),
    (r"^layers\.(\d+)\.layernorm_1\.", r"transformer.h.\1.ln_1."),
    (r"^layers\.(\d+)\.layernorm_2\.", r"transformer.h.\1.ln_2."),
    (r"^layers\.(\d+)\.attn\.att_proj\.", r"transformer.h.\1.attn.c_attn."),
    (r"^layers\.(\d+)\.attn\.out_proj\.", r"transformer.h.\1.attn.c_proj."),
    (r"^layers\.(\d+)\.attn\.", r"transformer.h.\1.attn."),
    (r"^layers\.(\d+)\.mlp\.in_proj\.", r"transformer.h.\1.mlp.c_fc."),
    (r"^layers\.(\d+)\.mlp\.out_proj\.", r"transformer.h.\1.mlp.c_proj."),
]
# The causal-mask buffers some checkpoints carry are not weights.
_MASK_BUFFER = re.compile(r"\.attn\.(bias|masked_bias)$")


@dataclass
class BarkSource:
    """A checkpoint read into memory: configs, Suno-named state dicts, tokenizer and voices."""

    configs: dict[str, GPTConfig]
    weights: dict[str, dict[str, torch.Tensor]]
    codec_config: CodecConfig
    codec_weights: dict[str, torch.Tensor]
    tokenizer: Path
    voices: dict[str, Voice] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------- GPT configs

def gpt_config_from_suno(args: dict, where: str) -> GPTConfig:
    args = dict(args)
    if "input_vocab_size" not in args and "vocab_size" in args:
        args["input_vocab_size"] = args["output_vocab_size"] = args["vocab_size"]
    try:
        return GPTConfig(
            n_layer=int(args["n_layer"]), n_head=int(args["n_head"]), n_embd=int(args["n_embd"]),
            input_vocab_size=int(args["input_vocab_size"]), output_vocab_size=int(args["output_vocab_size"]),
            block_size=int(args.get("block_size", 1024)), bias=bool(args.get("bias", True)),
            n_codes_total=int(args.get("n_codes_total", 0)), n_codes_given=int(args.get("n_codes_given", 0)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: model_args incomplete or invalid ({err!r})") from None


def gpt_config_from_hf(cfg: dict, fine: bool, where: str) -> GPTConfig:
    try:
        return GPTConfig(
            n_layer=int(cfg["num_layers"]), n_head=int(cfg["num_heads"]), n_embd=int(cfg["hidden_size"]),
            input_vocab_size=int(cfg["input_vocab_size"]), output_vocab_size=int(cfg["output_vocab_size"]),
            block_size=int(cfg.get("block_size", 1024)), bias=bool(cfg.get("bias", True)),
            n_codes_total=int(cfg.get("n_codes_total", 8)) if fine else 0,
            n_codes_given=int(cfg.get("n_codes_given", 1)) if fine else 0,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: incomplete or invalid config ({err!r})") from None


# ------------------------------------------------------------- key renaming

def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def hf_gpt_to_suno(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for pattern, repl in _HF_TO_SUNO:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    return out


def clean_gpt_state(state: dict, cfg: GPTConfig) -> dict:
    """Drop mask buffers; fill a fine model's tied head/table pair from whichever is present."""
    state = {k: v for k, v in state.items() if not _MASK_BUFFER.search(k)}
    if cfg.is_fine:
        for i in range(cfg.n_codes_total - cfg.n_codes_given):
            head, table = f"lm_heads.{i}.weight", f"transformer.wtes.{i + 1}.weight"
            if head not in state and table in state:
                state[head] = state[table]
            elif table not in state and head in state:
                state[table] = state[head]
    return state


# ------------------------------------------------------------------ sources

def _find_tokenizer(root: Path, explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
        if path.is_dir():
            path = next((path / f for f in TEXT_TOKENIZER_FILES if (path / f).is_file()), path / "vocab.txt")
        if not path.is_file():
            raise CheckpointError(f"--tokenizer {explicit!r}: no tokenizer.json or vocab.txt there")
        return path
    for name in TEXT_TOKENIZER_FILES:
        if (root / name).is_file():
            return root / name
    local = hub_snapshot(TOKENIZER_HUB_ID, ["vocab.txt"], required=False)
    if local is not None and (local / "vocab.txt").is_file():
        return local / "vocab.txt"
    raise CheckpointError(
        f"no tokenizer in {root} and {TOKENIZER_HUB_ID} is not in the Hugging Face cache; "
        "pass --tokenizer with its vocab.txt or tokenizer.json"
    )


def _suno_voices(root: Path) -> dict[str, Voice]:
    folder = root / "prompts"
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).with_suffix("").as_posix(): load_voice_file(p) for p in sorted(folder.rglob("*.npz"))}


def _hf_voices(root: Path) -> dict[str, Voice]:
    index_path = root / "speaker_embeddings_path.json"
    if not index_path.is_file():
        return {}
    voices = {}
    for name, entry in read_json(index_path).items():
        if not isinstance(entry, dict) or not all(k in entry for k in VOICE_KEYS):
            continue  # e.g. "repo_or_path"
        files = {k: root / entry[k] for k in VOICE_KEYS}
        if all(p.is_file() for p in files.values()):
            voices[name] = load_voice_arrays(files, f"{root}:{name}")
    return voices


def load_suno(root: Path, size: str, codec: str | None, tokenizer: str | None) -> BarkSource:
    configs, weights = {}, {}
    for stage, name in SUNO_FILES[size].items():
        path = root / name
        ckpt = torch_load(path)
        if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
            raise CheckpointError(f"{path}: not a Suno Bark checkpoint (needs 'model_args' and 'model')")
        cfg = gpt_config_from_suno(ckpt["model_args"], str(path))
        if (stage == "fine") != cfg.is_fine:
            raise CheckpointError(f"{path}: model_args describe the wrong kind of model for the {stage} stage")
        configs[stage] = cfg
        weights[stage] = clean_gpt_state(strip_prefix(ckpt["model"], "_orig_mod."), cfg)
    codec_cfg, codec_state, codec_src = find_codec(root, codec)
    return BarkSource(
        configs, weights, codec_cfg, codec_state, _find_tokenizer(root, tokenizer), _suno_voices(root),
        {"format": "suno", "size": size, "codec": codec_src},
    )


def load_hf(root: Path, codec: str | None, tokenizer: str | None) -> BarkSource:
    config = read_json(root / "config.json")
    if config.get("model_type") != "bark":
        raise CheckpointError(f"{root / 'config.json'}: model_type {config.get('model_type')!r}, expected 'bark'")
    state = load_weight_file(find_hf_weights(root))
    configs, weights = {}, {}
    for stage, prefix in HF_PREFIX.items():
        sub = config.get(HF_CONFIG_KEY[stage])
        if not isinstance(sub, dict):
            raise CheckpointError(f"{root / 'config.json'}: missing {HF_CONFIG_KEY[stage]}")
        cfg = gpt_config_from_hf(sub, stage == "fine", f"{root / 'config.json'}: {HF_CONFIG_KEY[stage]}")
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            raise CheckpointError(f"{root}: the checkpoint has no '{prefix}*' weights")
        configs[stage] = cfg
        weights[stage] = clean_gpt_state(hf_gpt_to_suno(part), cfg)
    codec_part = {k[len("codec_model."):]: v for k, v in state.items() if k.startswith("codec_model.")}
    if codec and codec_part:
        logger.info("using --codec %s instead of the checkpoint's codec_model", codec)
    if codec_part and not codec:
        codec_cfg = codec_config_from_hf(config.get("codec_config") or {}, f"{root / 'config.json'}: codec_config")
        codec_state = codec_state_to_ours(codec_part, codec_cfg.n_codebooks, f"{root}: codec_model")
        codec_src = str(root)
    else:
        codec_cfg, codec_state, codec_src = find_codec(root, codec)
    return BarkSource(
        configs, weights, codec_cfg, codec_state, _find_tokenizer(root, tokenizer), _hf_voices(root),
        {"format": "hf", "codec": codec_src},
    )


def detect_suno_size(root: Path, prefer_small: bool | None) -> str | None:
    have = [s for s, files in SUNO_FILES.items() if all((root / f).is_file() for f in files.values())]
    if not have:
        return None
    if len(have) == 2:
        return "small" if prefer_small else "large"
    return have[0]


def load_checkpoint(spec: str, codec: str | None = None, tokenizer: str | None = None,
                    small: bool | None = None) -> BarkSource:
    """Read `spec`: a Suno or HF directory, one file of either, or a hub id."""
    path = Path(spec).expanduser()
    if path.is_file():
        size = next((s for s, files in SUNO_FILES.items() if path.name in files.values()), None)
        if size is not None:
            source = load_suno(path.parent, size, codec, tokenizer)
        elif path.name in HF_WEIGHT_FILES or path.suffix in (".safetensors", ".bin"):
            source = load_hf(path.parent, codec, tokenizer)
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint file; expected one of Suno's text/coarse/fine[_2].pt "
                "or a Hugging Face model.safetensors / pytorch_model.bin"
            )
    elif path.is_dir():
        size = detect_suno_size(path, small)
        if size is not None:
            source = load_suno(path, size, codec, tokenizer)
        elif (path / "config.json").is_file():
            source = load_hf(path, codec, tokenizer)
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint layout; expected Suno's text.pt/coarse.pt/fine.pt "
                "(or the _2 large set) or a Hugging Face Bark directory with config.json"
            )
    elif looks_like_hub_id(spec):
        local = hub_snapshot(spec, ["*.json", "vocab.txt", "model.safetensors*", "speaker_embeddings/**"])
        if not any((local / name).is_file() for name in HF_WEIGHT_FILES):
            local = hub_snapshot(spec, ["*.json", "vocab.txt", "pytorch_model.bin*", "speaker_embeddings/**"])
        source = load_hf(local, codec, tokenizer)
    else:
        raise CheckpointError(f"checkpoint {spec!r}: no such file or directory, and not a hub id like 'suno/bark-small'")
    source.info["checkpoint"] = spec
    return source
