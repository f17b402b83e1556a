"""The model directory's self-description: `config.json`.

A model directory holds four ONNX graphs (semantic, coarse, fine, codec), a
tokenizer and optional voices. `config.json` records their shapes, Bark's
constants, the precision, the graph input and output names and where the
weights came from, so a runtime can refuse a directory it cannot run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import constants as C
from .errors import ModelDirError

FORMAT_VERSION = 2  # 2: causal graphs take one past_length per row
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
VOICES_DIR = "voices"
STAGES = ("semantic", "coarse", "fine", "codec")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
KV_LAYOUTS = ("inplace", "concat")

# Bark's constants as the runtime implements them; an export records them and
# the runtime refuses a model whose numbers differ.
BARK_CONSTANTS = {
    name: getattr(C, name)
    for name in (
        "CONTEXT_WINDOW_SIZE", "SEMANTIC_RATE_HZ", "SEMANTIC_VOCAB_SIZE", "CODEBOOK_SIZE",
        "N_COARSE_CODEBOOKS", "N_FINE_CODEBOOKS", "COARSE_RATE_HZ", "SAMPLE_RATE",
        "TEXT_ENCODING_OFFSET", "SEMANTIC_PAD_TOKEN", "TEXT_PAD_TOKEN", "SEMANTIC_INFER_TOKEN",
        "COARSE_SEMANTIC_PAD_TOKEN", "COARSE_INFER_TOKEN",
    )
}


def _from_dict(cls, data: Any, where: str):
    """Build a dataclass from a JSON object, naming the field that is wrong."""
    if not isinstance(data, dict):
        raise ModelDirError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelDirError(f"{where}: unknown keys {unknown}")
    try:
        obj = cls(**data)
    except TypeError as err:
        raise ModelDirError(f"{where}: {err}") from None
    return obj


@dataclass(frozen=True)
class GPTConfig:
    """Shape of one of Bark's GPTs (nanoGPT layout)."""

    n_layer: int
    n_head: int
    n_embd: int
    input_vocab_size: int
    output_vocab_size: int
    block_size: int = C.CONTEXT_WINDOW_SIZE
    bias: bool = True
    n_codes_total: int = 0  # fine model only: codebooks seen (8)
    n_codes_given: int = 0  # fine model only: codebooks never predicted (1)

    def __post_init__(self):
        for name in ("n_layer", "n_head", "n_embd", "input_vocab_size", "output_vocab_size", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def is_fine(self) -> bool:
        return self.n_codes_total > 0

    @classmethod
    def from_dict(cls, data: Any, where: str = "GPT config") -> GPTConfig:
        try:
            return _from_dict(cls, data, where)
        except ValueError as err:
            raise ModelDirError(f"{where}: {err}") from None


@dataclass(frozen=True)
class CodecConfig:
    """Shape of the EnCodec 24 kHz decoder (SEANet) used at 6 kbps."""

    hidden_size: int = 128
    num_filters: int = 32
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    num_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    num_lstm_layers: int = 2
    codebook_size: int = C.CODEBOOK_SIZE
    n_codebooks: int = C.N_FINE_CODEBOOKS  # codebooks decoded (6 kbps)
    audio_channels: int = 1

    def __post_init__(self):
        object.__setattr__(self, "upsampling_ratios", tuple(int(r) for r in self.upsampling_ratios))

    @property
    def hop_length(self) -> int:
        hop = 1
        for ratio in self.upsampling_ratios:
            hop *= ratio
        return hop

    @classmethod
    def from_dict(cls, data: Any, where: str = "codec config") -> CodecConfig:
        return _from_dict(cls, data, where)


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX graph of the model directory and its interface."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # The `logits` output holds vocabulary columns [logits_start, logits_start + logits_size).
    logits_start: int = 0
    logits_size: int = 0
    # Semantic graph: the `merge_ids` value that adds nothing (a zero embedding row).
    merge_none_id: int = -1

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @classmethod
    def from_dict(cls, data: Any, where: str = "graph") -> GraphInfo:
        return _from_dict(cls, data, where)


@dataclass(frozen=True)
class ModelConfig:
    """Everything `config.json` says about a model directory."""

    semantic: GPTConfig
    coarse: GPTConfig
    fine: GPTConfig
    codec: CodecConfig
    graphs: dict[str, GraphInfo]
    # One-token step graphs of the causal stages (in-place caches, not quantized): fixed shapes
    # for CUDA graphs. They share the weights of `graphs` on disk.
    step_graphs: dict[str, GraphInfo] = field(default_factory=dict)
    precision: str = "fp32"
    kv_cache: str = "inplace"
    opset: int = 17
    format_version: int = FORMAT_VERSION
    bark_onnx_version: str = ""
    constants: dict[str, Any] = field(default_factory=lambda: dict(BARK_CONSTANTS))
    source: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = TOKENIZER_FILE
    voices: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "voices", tuple(self.voices))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["codec"]["upsampling_ratios"] = list(self.codec.upsampling_ratios)
        for info in [*data["graphs"].values(), *data["step_graphs"].values()]:
            info["inputs"] = list(info["inputs"])
            info["outputs"] = list(info["outputs"])
        data["voices"] = list(self.voices)
        return data

    def save(self, model_dir: str | Path) -> None:
        path = Path(model_dir) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_FILE) -> ModelConfig:
        if not isinstance(data, dict):
            raise ModelDirError(f"{where}: expected a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelDirError(
                f"{where}: model format version {version!r}, this bark-onnx reads version "
                f"{FORMAT_VERSION}; export the model again with this version "
                "(bark-onnx export --checkpoint ... --out DIR)"
            )
        data = dict(data)
        for name in ("semantic", "coarse", "fine"):
            data[name] = GPTConfig.from_dict(data.get(name), f"{where}: {name}")
        data["codec"] = CodecConfig.from_dict(data.get("codec"), f"{where}: codec")
        graphs = data.get("graphs")
        if not isinstance(graphs, dict) or set(graphs) != set(STAGES):
            raise ModelDirError(f"{where}: 'graphs' must describe exactly {list(STAGES)}")
        data["graphs"] = {k: GraphInfo.from_dict(v, f"{where}: graphs.{k}") for k, v in graphs.items()}
        steps = data.get("step_graphs", {})
        if not isinstance(steps, dict) or not set(steps) <= {"semantic", "coarse"}:
            raise ModelDirError(f"{where}: 'step_graphs' may describe 'semantic' and 'coarse' only")
        data["step_graphs"] = {k: GraphInfo.from_dict(v, f"{where}: step_graphs.{k}") for k, v in steps.items()}
        config = _from_dict(cls, data, where)
        if config.precision not in PRECISIONS:
            raise ModelDirError(f"{where}: unknown precision {config.precision!r} (one of {PRECISIONS})")
        if config.kv_cache not in KV_LAYOUTS:
            raise ModelDirError(f"{where}: unknown kv_cache {config.kv_cache!r} (one of {KV_LAYOUTS})")
        differing = {k: v for k, v in BARK_CONSTANTS.items() if config.constants.get(k) != v}
        if differing:
            raise ModelDirError(f"{where}: Bark constants differ from this runtime's: {sorted(differing)}")
        return config

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelConfig:
        model_dir = Path(model_dir)
        path = model_dir / CONFIG_FILE
        if not model_dir.is_dir():
            raise ModelDirError(
                f"model directory {str(model_dir)!r} does not exist; create one with "
                "'bark-onnx export --checkpoint CHECKPOINT --out DIR'"
            )
        if not path.is_file():
            raise ModelDirError(f"{str(model_dir)!r} has no {CONFIG_FILE}: it is not a bark-onnx model directory")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelDirError(f"{path}: cannot read it as JSON ({err})") from None
        return cls.from_dict(data, str(path))
