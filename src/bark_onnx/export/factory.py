"""Random-weight Bark checkpoints of any shape, in Suno's and the Hugging Face layout.

Tests and benchmarks make their own checkpoints here: Bark's real vocabularies
and special tokens, the chosen transformer shape (`tiny`, `small` = bark-small,
`large` = bark), the real EnCodec 24 kHz decoder shape, a small WordPiece
vocabulary and random voice presets. Speed depends on shapes, not on values,
so these give real timings; the audio they make is noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bark_onnx.runtime.model.config import CodecConfig, GPTConfig
from bark_onnx.runtime.constants import CODEBOOK_SIZE, SEMANTIC_VOCAB_SIZE

from .encodec import EncodecDecoder
from .gpt import CausalGPT, FineGPT

SHAPES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),
    "small": dict(n_layer=12, n_head=12, n_embd=768),  # suno/bark-small
    "large": dict(n_layer=24, n_head=16, n_embd=1024),  # suno/bark
}
VOCABS = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096), "fine": (1_056, 1_056)}
N_CODEC_CODEBOOKS = 32  # the 24 kHz model carries 32 codebooks (24 kbps); Bark decodes 8
DEFAULT_VOICES = ("v2/en_speaker_0", "v2/en_speaker_1", "announcer")

# A small WordPiece vocabulary in bert-base-multilingual-cased's style (special
# tokens first, whole words, '##' continuations, a few non-Latin characters).
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "hello world the a an is are was this that it my name and of to in for on with you i we they "
    "he she laughs laughter sighs music gasps clears throat hi how today good bad yes no "
    "Hello The I It My We This Bark ONNX test voice speak".split()
)
_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + list(
    ".,!?;:'\"()[]-…♪&%$#@*/+=<>éèàüöäñçßøåæ日本語中文한국어"
)


def tiny_vocab() -> list[str]:
    subwords = ["##" + c for c in _CHARS if c.isalnum()] + ["##s", "##ing", "##ed", "##ly", "##er"]
    seen, vocab = set(), []
    for token in _SPECIAL + _WORDS + _CHARS + subwords:
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def gpt_configs(size: str | dict = "tiny", bias: bool = False) -> dict[str, GPTConfig]:
    """Configs of the three GPTs: a named size or a dict(n_layer=, n_head=, n_embd=)."""
    if isinstance(size, dict):
        shape = size
    elif size in SHAPES:
        shape = SHAPES[size]
    else:
        raise ValueError(f"unknown size {size!r}; one of {sorted(SHAPES)} or a dict of n_layer, n_head, n_embd")
    configs = {}
    for stage, (vin, vout) in VOCABS.items():
        extra = dict(n_codes_total=8, n_codes_given=1) if stage == "fine" else {}
        configs[stage] = GPTConfig(**shape, input_vocab_size=vin, output_vocab_size=vout, bias=bias, **extra)
    return configs


def _randomize(module: torch.nn.Module, gen: torch.Generator, std: float = 0.02) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, std, generator=gen)
            elif p.dim() == 1:  # LayerNorm gains around 1
                p.normal_(1.0, 0.1, generator=gen)
            else:
                p.normal_(0.0, std, generator=gen)


def random_gpt_state(cfg: GPTConfig, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    module = FineGPT(cfg) if cfg.is_fine else CausalGPT(cfg)
    _randomize(module, gen)
    return {k: v.clone() for k, v in module.state_dict().items()}


def random_codec_state(seed: int, cfg: CodecConfig = CodecConfig()) -> dict[str, torch.Tensor]:
    """The decoder in encodec.py naming, with weight norm unfolded again (weight_g, weight_v)."""
    torch.manual_seed(seed)  # default conv/LSTM init; Generator-free APIs
    module = EncodecDecoder(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    for key, value in module.state_dict().items():
        if key == "codebooks":
            continue
        if key.endswith(".conv.weight"):
            # w = g * v / |v|: a random positive rescale of v keeps w and exercises the fold
            scale = torch.rand(value.shape[0], *([1] * (value.dim() - 1)), generator=gen) + 0.5
            v = value * scale
            state[key[:-len("weight")] + "weight_v"] = v
            state[key[:-len("weight")] + "weight_g"] = v.flatten(1).norm(dim=1).view_as(scale) / scale
        else:
            state[key] = value.clone()
    state["codebooks"] = torch.randn(N_CODEC_CODEBOOKS, cfg.codebook_size, cfg.hidden_size, generator=gen)
    return state


def random_voice(rng: np.random.Generator, n_semantic: int | None = None) -> dict[str, np.ndarray]:
    n = int(n_semantic or rng.integers(200, 600))
    m = int(round(n * 75 / 49.9))
    return {
        "semantic_prompt": rng.integers(0, SEMANTIC_VOCAB_SIZE, n, dtype=np.int64),
        "coarse_prompt": rng.integers(0, CODEBOOK_SIZE, (2, m), dtype=np.int64),
        "fine_prompt": rng.integers(0, CODEBOOK_SIZE, (8, m), dtype=np.int64),
    }


# ------------------------------------------------------------------ layouts

def _suno_codec_keys(state: dict) -> dict:
    """encodec.py names -> the `encodec` package's checkpoint names."""
    out = {}
    for key, value in state.items():
        if key == "codebooks":
            for i, book in enumerate(value):
                out[f"quantizer.vq.layers.{i}._codebook.embed"] = book.clone()
            continue
        idx = int(key.split(".")[1])
        inner = "convtr.convtr" if key.startswith(f"layers.{idx}.conv.") and idx in _transposed_indices() else None
        new = "decoder.model." + key[len("layers."):]
        if inner:
            new = new.replace(".conv.", f".{inner}.", 1)
        elif ".lstm." not in new:
            new = new.replace(".conv.", ".conv.conv.", 1)
        out[new] = value
    return out


def _transposed_indices(cfg: CodecConfig = CodecConfig()) -> set[int]:
    # layers: conv, lstm, then per ratio (elu, convtr, resblocks...), so convtr sit at 3, 3 + step, ...
    step = 2 + cfg.num_residual_layers
    return {3 + i * step for i in range(len(cfg.upsampling_ratios))}


def _hf_codec_keys(state: dict, parametrized: bool = False) -> dict:
    out = {}
    for key, value in state.items():
        if key == "codebooks":
            for i, book in enumerate(value):
                out[f"quantizer.layers.{i}.codebook.embed"] = book.clone()
            continue
        new = "decoder." + key
        if parametrized:
            new = new.replace(".weight_g", ".parametrizations.weight.original0")
            new = new.replace(".weight_v", ".parametrizations.weight.original1")
        out[new] = value
    return out


_HF_NAMES = [
    ("transformer.wtes.", "input_embeds_layers."), ("transformer.wte.", "input_embeds_layer."),
    ("transformer.wpe.", "position_embeds_layer."), ("transformer.ln_f.", "layernorm_final."),
    ("transformer.h.", "layers."), (".ln_1.", ".layernorm_1."), (".ln_2.", ".layernorm_2."),
    (".attn.c_attn.", ".attn.att_proj."), (".attn.c_proj.", ".attn.out_proj."),
    (".mlp.c_fc.", ".mlp.in_proj."), (".mlp.c_proj.", ".mlp.out_proj."),
]


def _hf_gpt_keys(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for old, new in _HF_NAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def _hf_sub_config(cfg: GPTConfig) -> dict:
    data = dict(
        block_size=cfg.block_size, input_vocab_size=cfg.input_vocab_size, output_vocab_size=cfg.output_vocab_size,
        num_layers=cfg.n_layer, num_heads=cfg.n_head, hidden_size=cfg.n_embd, dropout=0.0, bias=cfg.bias,
        initializer_range=0.02, use_cache=True,
    )
    if cfg.is_fine:
        data.update(n_codes_total=cfg.n_codes_total, n_codes_given=cfg.n_codes_given, tie_word_embeddings=True)
    return data


def _hf_codec_config(cfg: CodecConfig) -> dict:
    return dict(
        model_type="encodec", target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], sampling_rate=24000,
        audio_channels=1, normalize=False, chunk_length_s=None, overlap=None, hidden_size=cfg.hidden_size,
        num_filters=cfg.num_filters, num_residual_layers=cfg.num_residual_layers,
        upsampling_ratios=list(cfg.upsampling_ratios), norm_type="weight_norm", kernel_size=cfg.kernel_size,
        last_kernel_size=cfg.last_kernel_size, residual_kernel_size=cfg.residual_kernel_size,
        dilation_growth_rate=cfg.dilation_growth_rate, use_causal_conv=True, pad_mode="reflect",
        compress=cfg.compress, num_lstm_layers=cfg.num_lstm_layers, trim_right_ratio=1.0,
        codebook_size=cfg.codebook_size, codebook_dim=None, use_conv_shortcut=True,
    )


def _write_voices_npz(folder: Path, voices: dict[str, dict[str, np.ndarray]]) -> None:
    for name, voice in voices.items():
        path = folder / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **voice)


def _write_voices_hf(root: Path, voices: dict[str, dict[str, np.ndarray]]) -> None:
    index: dict[str, object] = {"repo_or_path": str(root)}
    for name, voice in voices.items():
        entry = {}
        for key, arr in voice.items():
            rel = f"speaker_embeddings/{name}_{key}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, arr)
            entry[key] = rel
        index[name] = entry
    (root / "speaker_embeddings_path.json").write_text(json.dumps(index, indent=2))


def write_checkpoint(
    out_dir: str | Path,
    layout: str = "suno",
    size: str | dict = "tiny",
    bias: bool = False,
    seed: int = 0,
    voices: tuple[str, ...] = DEFAULT_VOICES,
    parametrized_codec: bool = False,
) -> Path:
    """Write a random-weight Bark checkpoint; returns its directory."""
    if layout not in ("suno", "hf"):
        raise ValueError(f"layout must be 'suno' or 'hf', got {layout!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    configs = gpt_configs(size, bias)
    states = {stage: random_gpt_state(cfg, seed + i) for i, (stage, cfg) in enumerate(configs.items())}
    codec = random_codec_state(seed + 10)
    rng = np.random.default_rng(seed)
    voice_data = {name: random_voice(rng) for name in voices}
    (root / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")

    if layout == "suno":
        names = {"semantic": "text", "coarse": "coarse", "fine": "fine"}
        suffix = "_2" if size == "large" else ""
        for stage, cfg in configs.items():
            args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                        bias=cfg.bias, dropout=0.0, input_vocab_size=cfg.input_vocab_size,
                        output_vocab_size=cfg.output_vocab_size)
            if cfg.is_fine:
                args.update(n_codes_total=cfg.n_codes_total, n_codes_given=cfg.n_codes_given)
            # Suno's files come from torch.compile'd models and hold numpy scalars
            model = {("_orig_mod." + k if stage == "semantic" else k): v for k, v in states[stage].items()}
            torch.save({"model_args": args, "model": model, "iter_num": 0,
                        "best_val_loss": np.float64(1.5)}, root / f"{names[stage]}{suffix}.pt")
        torch.save(_suno_codec_keys(codec), root / "encodec_24khz-d7cc33bc.th")
        _write_voices_npz(root / "prompts", voice_data)
        return root

    from safetensors.torch import save_file

    state: dict[str, torch.Tensor] = {}
    for stage, prefix in (("semantic", "semantic."), ("coarse", "coarse_acoustics."), ("fine", "fine_acoustics.")):
        for key, value in _hf_gpt_keys(states[stage]).items():
            state[prefix + key] = value
    for key, value in _hf_codec_keys(codec, parametrized_codec).items():
        state["codec_model." + key] = value
    # safetensors refuses shared storage: the fine model's tied tables are written twice
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(root / "model.safetensors"))
    config = dict(
        model_type="bark", architectures=["BarkModel"],
        semantic_config=_hf_sub_config(configs["semantic"]),
        coarse_acoustics_config=_hf_sub_config(configs["coarse"]),
        fine_acoustics_config=_hf_sub_config(configs["fine"]),
        codec_config=_hf_codec_config(CodecConfig()),
    )
    (root / "config.json").write_text(json.dumps(config, indent=2))
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "tokenizer_class": "BertTokenizer"}))
    _write_voices_hf(root, voice_data)
    return root
