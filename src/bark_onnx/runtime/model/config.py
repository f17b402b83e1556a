"""The model directory's self-description: `config.json`.

A model directory holds four ONNX graphs (semantic, coarse, fine, codec), a
tokenizer and optional voices. `config.json` records their shapes, Bark's
constants, the precision, the graph input and output names and where the
weights came from, so a runtime can refuse a directory it cannot run.
"""

from __future__ import annotations

import json
import os
import reprlib
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .. import constants as C
from ..errors import ModelDirError
from ..files import write_atomic

FORMAT_VERSION = 3  # 2: causal graphs take one past_length per row; 3: every graph draws its tokens
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


MAX_CONFIG_BYTES = 1024 * 1024  # a real config.json is ~3 kB
MAX_JSON_DEPTH = 32  # a real one nests 4 deep


def _type_error(where: str, want: str, value: Any) -> ModelDirError:
    return ModelDirError(f"{where or 'the top level'} must be {want}, got {type(value).__name__} "
                         f"{_short(value)}; the file is damaged or hand-edited: export the model again")


def _key(where: str, name: Any) -> str:
    return f"{where}.{name}" if where else str(name)


def _short(value: Any) -> str:
    return reprlib.repr(value)  # bounded in length and depth


def _path_text(path: Path) -> str:
    text = str(path)
    return repr(text) if len(text) <= 200 else repr(text[:200]) + "..."


def _checked(value: Any, hint: Any, where: str) -> Any:
    """`value` from JSON checked against a field's type (int, bool, str, tuple[X, ...], dict[str, X],
    a config dataclass, Any); lists become tuples, objects become dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if is_dataclass(hint):
        return hint.from_dict(value, where)
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise _type_error(where, "true or false" if hint is bool else "a string", value)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _type_error(where, "an integer", value)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _type_error(where, "a list", value)
        return tuple(_checked(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, "an object", value)
        return {k: _checked(v, args[1], _key(where, k)) for k, v in value.items()}
    raise TypeError(f"no JSON check for the type {hint!r}")  # a new field type needs a case here


def _from_dict(cls, data: Any, where: str):
    """Build a config dataclass from a JSON object, field by field, naming the field that is wrong."""
    if not isinstance(data, dict):
        raise _type_error(where, "an object", data)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelDirError(f"{where or 'the top level'} has unknown keys {unknown}; export the model again "
                            "with this bark-onnx")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _checked(data[f.name], hints[f.name], _key(where, f.name))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ModelDirError(f"'{_key(where, f.name)}' is missing; export the model again")
    try:
        return cls(**values)
    except ValueError as err:  # the range checks of __post_init__
        raise ModelDirError(f"{where + ': ' if where else ''}{err}; export the model again") from None


def _positive(obj, names) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _plain_file_name(name: str, what: str) -> None:
    """A file of the model directory: a plain name, never a path that leaves it."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{what} must be a file name inside the model directory, got {name!r}")


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
        _positive(self, ("n_layer", "n_head", "n_embd", "input_vocab_size", "output_vocab_size", "block_size"))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_codes_total and not 0 < self.n_codes_given < self.n_codes_total:
            raise ValueError(f"n_codes_given must lie in [1, n_codes_total), got {self.n_codes_given}")
        if self.n_codes_total < 0 or (not self.n_codes_total and self.n_codes_given):
            raise ValueError(f"n_codes_total and n_codes_given are both 0 (a causal model) or describe the "
                             f"fine model, got {self.n_codes_total} and {self.n_codes_given}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def is_fine(self) -> bool:
        return self.n_codes_total > 0

    @classmethod
    def from_dict(cls, data: Any, where: str = "GPT config") -> GPTConfig:
        return _from_dict(cls, data, where)


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
        _positive(self, [f.name for f in fields(self) if f.name != "upsampling_ratios"])
        if not self.upsampling_ratios or min(self.upsampling_ratios) < 1:
            raise ValueError(f"upsampling_ratios must be positive integers, got {list(self.upsampling_ratios)}")

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
    # Causal graphs: the logits columns [lo, hi) a draw may take, by the index the `band` input gives.
    bands: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        try:
            bands = tuple((int(lo), int(hi)) for lo, hi in self.bands)
        except (TypeError, ValueError):
            raise ValueError(f"bands must be pairs of column indices, got {self.bands!r}") from None
        if any(not 0 <= lo < hi for lo, hi in bands):
            raise ValueError(f"bands must be column ranges [lo, hi) with 0 <= lo < hi, got {list(bands)}")
        object.__setattr__(self, "bands", bands)
        _plain_file_name(self.file, "file")
        if self.logits_start < 0 or self.logits_size < 0 or self.merge_none_id < -1:
            raise ValueError(f"logits_start and logits_size must be >= 0 and merge_none_id >= -1, got "
                             f"{self.logits_start}, {self.logits_size}, {self.merge_none_id}")

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
        if set(self.graphs) != set(STAGES):
            raise ValueError(f"graphs must describe exactly {list(STAGES)}, got {sorted(self.graphs)}")
        if not set(self.step_graphs) <= {"semantic", "coarse"}:
            raise ValueError(f"step_graphs may describe 'semantic' and 'coarse' only, got {sorted(self.step_graphs)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.kv_cache not in KV_LAYOUTS:
            raise ValueError(f"unknown kv_cache {self.kv_cache!r} (one of {', '.join(KV_LAYOUTS)})")
        _positive(self, ("opset",))
        _plain_file_name(self.tokenizer, "tokenizer")
        _check_bark_layout(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["codec"]["upsampling_ratios"] = list(self.codec.upsampling_ratios)
        for info in [*data["graphs"].values(), *data["step_graphs"].values()]:
            info["inputs"] = list(info["inputs"])
            info["outputs"] = list(info["outputs"])
        data["voices"] = list(self.voices)
        return data

    def save(self, model_dir: str | Path) -> None:
        """Write config.json (under a temporary name, then renamed into place)."""
        write_atomic(Path(model_dir) / CONFIG_FILE, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_FILE) -> ModelConfig:
        """Check `data` (parsed config.json) field by field; ModelDirError names the first wrong field."""
        if not isinstance(data, dict):
            raise ModelDirError(f"{where}: expected a JSON object, got {type(data).__name__}; export the model again")
        version = data.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ModelDirError(
                f"{where}: model format version {_short(version)}, this bark-onnx reads version "
                f"{FORMAT_VERSION}; export the model again with this version "
                "(bark-onnx export --checkpoint ... --out DIR)"
            )
        try:
            config = _from_dict(cls, data, "")
        except ModelDirError as err:
            raise ModelDirError(f"{where}: {err}") from None
        differing = {k: v for k, v in BARK_CONSTANTS.items() if config.constants.get(k) != v}
        if differing:
            raise ModelDirError(f"{where}: Bark constants differ from this runtime's: {sorted(differing)}")
        return config

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelConfig:
        if not isinstance(model_dir, (str, os.PathLike)):
            raise ModelDirError(f"a model directory is a path, got {type(model_dir).__name__}")
        model_dir = Path(model_dir)
        path = model_dir / CONFIG_FILE
        try:
            found = model_dir.is_dir(), path.is_file()
        except OSError as err:  # a name too long, a folder we may not enter
            raise ModelDirError(f"cannot open the model directory {_path_text(model_dir)} ({err.strerror})") from None
        if not found[0]:
            raise ModelDirError(
                f"model directory {_path_text(model_dir)} does not exist; create one with "
                "'bark-onnx export --checkpoint CHECKPOINT --out DIR'"
            )
        if not found[1]:
            raise ModelDirError(f"{_path_text(model_dir)} has no {CONFIG_FILE}: it is not a bark-onnx model directory")
        return cls.from_dict(_read_json(path), str(path))


def _read_json(path: Path) -> Any:
    """config.json parsed, refusing files too large or nested too deeply to be a config."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelDirError(f"{path}: {path.stat().st_size} bytes, too large for a config.json; "
                                "export the model again")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: JSON syntax, 5000-digit numbers
        raise ModelDirError(f"{path}: cannot read it as JSON ({err}); export the model again") from None
    except RecursionError:
        data = None
    if data is None or _depth(data) > MAX_JSON_DEPTH:
        raise ModelDirError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep, which no config.json "
                            "is; export the model again")
    return data


def _depth(data: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (without recursion)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _check_bark_layout(config: ModelConfig) -> None:
    """The numbers the runtime relies on: which model is the fine one, which logits columns each
    graph returns, and input vocabularies that hold Bark's special tokens."""
    if config.fine.n_codes_total != C.N_FINE_CODEBOOKS or config.semantic.is_fine or config.coarse.is_fine:
        raise ValueError(f"fine must see {C.N_FINE_CODEBOOKS} codebooks (n_codes_total) and semantic and coarse "
                         "none; the stages are mixed up")
    if config.codec.n_codebooks != C.N_FINE_CODEBOOKS or config.codec.codebook_size != C.CODEBOOK_SIZE:
        raise ValueError(f"codec must decode {C.N_FINE_CODEBOOKS} codebooks of {C.CODEBOOK_SIZE} codes")
    logits = {"semantic": C.SEMANTIC_LOGITS, "coarse": C.COARSE_LOGITS, "fine": C.FINE_LOGITS}
    for stage, (start, stop) in logits.items():
        info, cfg = config.graphs[stage], getattr(config, stage)
        if (info.logits_start, info.logits_size) != (start, stop - start) or stop > cfg.output_vocab_size:
            raise ValueError(f"graphs.{stage} must return logits columns [{start}, {stop}) of its "
                             f"{cfg.output_vocab_size}, got [{info.logits_start}, "
                             f"{info.logits_start + info.logits_size})")
    for stage, bands in (("semantic", C.SEMANTIC_BANDS), ("coarse", C.COARSE_BANDS)):
        if config.graphs[stage].bands != bands:
            raise ValueError(f"graphs.{stage}.bands must be Bark's {[list(b) for b in bands]}, "
                             f"got {[list(b) for b in config.graphs[stage].bands]}")
    for stage in ("semantic", "coarse", "fine"):
        if getattr(config, stage).block_size != C.CONTEXT_WINDOW_SIZE:
            raise ValueError(f"{stage}.block_size must be Bark's {C.CONTEXT_WINDOW_SIZE}, "
                             f"got {getattr(config, stage).block_size}")
    need = {"semantic": C.SEMANTIC_INFER_TOKEN + 1, "coarse": C.COARSE_INFER_TOKEN + 1, "fine": C.CODEBOOK_SIZE + 1}
    for stage, size in need.items():
        if getattr(config, stage).input_vocab_size < size:
            raise ValueError(f"{stage}.input_vocab_size must be at least {size} (Bark's special tokens), "
                             f"got {getattr(config, stage).input_vocab_size}")
    if config.graphs["semantic"].merge_none_id != config.semantic.input_vocab_size:
        raise ValueError("graphs.semantic.merge_none_id must be semantic.input_vocab_size (the zero row)")
