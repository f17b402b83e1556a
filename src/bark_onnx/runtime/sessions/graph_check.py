"""Does config.json describe the graphs beside it? Checked once, at load.

A directory that mixes files of different exports, or a config.json edited by
hand, would otherwise load and fail later inside ONNX Runtime with an error
about a tensor shape. Here each graph's inputs and outputs (names, element
types, and every fixed dimension: heads, head size, layers, logits columns,
codebooks) are compared with what config.json says, and a mismatch is refused
with a ModelDirError that says to export again.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from ..errors import ModelDirError
from ..model.config import STAGES, GPTConfig, GraphInfo, ModelConfig

KV_TYPES = ("tensor(float)", "tensor(float16)")
EXPORT_AGAIN = ("the directory mixes files of different exports or config.json was edited: export it again "
                "(bark-onnx export --checkpoint ... --out DIR)")


class _Arg(Protocol):  # onnxruntime.NodeArg
    name: str
    shape: Sequence
    type: str


class _Session(Protocol):  # onnxruntime.InferenceSession
    def get_inputs(self) -> Sequence[_Arg]: ...

    def get_outputs(self) -> Sequence[_Arg]: ...


def check_graphs(config: ModelConfig, sessions: Mapping[str, _Session]) -> None:
    """Raise ModelDirError unless every graph has the interface `config` describes."""
    for stage in STAGES:
        _check_names(config.graphs[stage], sessions[stage])
    for stage in ("semantic", "coarse"):
        _check_causal(stage, getattr(config, stage), config.graphs[stage], config.kv_cache, sessions[stage])
    fine, codec = config.graphs["fine"], config.graphs["codec"]
    fine_in, fine_out = _args(sessions["fine"])
    _expect_dim(fine, _arg(fine, fine_in, "codes"), 2, config.fine.n_codes_total, "fine.n_codes_total (codebooks)")
    for name in ("pred_idx", "temperature", "uniform"):
        _arg(fine, fine_in, name)
    _arg(fine, fine_out, "tokens")
    _expect_dim(fine, _arg(fine, fine_out, "logits"), 2, fine.logits_size, "graphs.fine.logits_size")
    codec_in, codec_out = _args(sessions["codec"])
    _expect_dim(codec, _arg(codec, codec_in, "codes"), 1, config.codec.n_codebooks, "codec.n_codebooks")
    _arg(codec, codec_out, "audio")


def _args(session: _Session) -> tuple[dict[str, _Arg], dict[str, _Arg]]:
    return {a.name: a for a in session.get_inputs()}, {a.name: a for a in session.get_outputs()}


def _arg(info: GraphInfo, args: dict[str, _Arg], name: str) -> _Arg:
    if name not in args:
        raise ModelDirError(f"{info.file} has no '{name}', which the runtime feeds or reads; {EXPORT_AGAIN}")
    return args[name]


def _check_names(info: GraphInfo, session: _Session) -> None:
    inputs, outputs = _args(session)
    if tuple(inputs) != info.inputs or tuple(outputs) != info.outputs:
        raise ModelDirError(f"{info.file} does not have the inputs and outputs config.json lists; {EXPORT_AGAIN}")


def _check_causal(stage: str, cfg: GPTConfig, info: GraphInfo, kv_cache: str, session: _Session) -> None:
    inputs, outputs = _args(session)
    layers = sum(name.startswith("past_key.") for name in inputs)
    if layers != cfg.n_layer:
        raise _mismatch(info, f"{stage}.n_layer", cfg.n_layer, f"{layers} layers of KV cache")
    if ("past_length" in inputs) != (kv_cache == "inplace"):
        layout = "inplace" if "past_length" in inputs else "concat"
        raise _mismatch(info, "kv_cache", kv_cache, f"the '{layout}' layout")
    if ("merge_ids" in inputs) != (stage == "semantic"):
        raise _mismatch(info, "the stage", stage, "the other causal stage's inputs")
    _arg(info, inputs, "input_ids")
    for i in range(cfg.n_layer):
        for kind in ("key", "value"):
            _arg(info, outputs, f"present_{kind}.{i}")
            past = _arg(info, inputs, f"past_{kind}.{i}")
            if past.type not in KV_TYPES:
                raise _mismatch(info, f"the element type of {past.name}", " or ".join(KV_TYPES), past.type)
            _expect_dim(info, past, 1, cfg.n_head, f"{stage}.n_head")
            _expect_dim(info, past, 3, cfg.head_dim, f"{stage}.n_embd / n_head (head size)")
    _expect_dim(info, _arg(info, outputs, "logits"), 1, info.logits_size, f"graphs.{stage}.logits_size")
    for name in ("temperature", "uniform", "band"):  # the draw of the next token (format 3)
        _arg(info, inputs, name)
    _arg(info, outputs, "token")
    if stage == "semantic":
        _arg(info, outputs, "eos_p")


def _expect_dim(info: GraphInfo, arg: _Arg, axis: int, want: int, what: str) -> None:
    """A dimension fixed in the graph must equal the config's number (named ones are free)."""
    shape = list(arg.shape or [])
    if axis >= len(shape):
        raise _mismatch(info, f"the rank of {arg.name}", f"at least {axis + 1}", len(shape))
    got = shape[axis]
    if isinstance(got, int) and got != want:
        raise _mismatch(info, what, want, f"{got} (dimension {axis} of {arg.name})")


def _mismatch(info: GraphInfo, what: str, want, got) -> ModelDirError:
    return ModelDirError(f"{info.file} does not match config.json: {what} is {want} there, the graph has {got}; "
                         f"{EXPORT_AGAIN}")
