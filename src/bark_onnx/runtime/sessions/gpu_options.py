"""Options of the GPU providers: CUDA's convolution search and arena, TensorRT's profiles and caches.

TensorRT builds one engine per optimisation profile: without profiles it
rebuilds whenever a dynamic dimension leaves the range it built for (every
step of a growing cache). Each graph gets one profile covering the shapes the
runtime feeds it, read from the model directory's config.json; engines and
timing caches go under the user cache directory, never into the model
directory (which may be read-only or shared).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..constants import FINE_WINDOW, N_FINE_CODEBOOKS
from ..model.config import CONFIG_FILE, ModelConfig
from ..model.paths import trt_cache_dir
from .providers import CUDA, TENSORRT, Placement

logger = logging.getLogger(__name__)

MAX_BATCH = 8  # rows per batched call the profiles cover (the benchmarks' batch)
CODEC_OPT_FRAMES = 976  # one 13 s segment
CODEC_MAX_FRAMES = 2048  # above the ~1154 frames of Bark's longest generation (768 semantic tokens)


def cuda_options() -> dict[str, str]:
    return {
        # cuDNN's exhaustive search runs again for every new input shape, and the codec sees a new
        # length with every stream chunk and segment; the heuristic choice costs nothing.
        "cudnn_conv_algo_search": "HEURISTIC",
        # Grow the arena by what is asked rather than to the next power of two: inputs that grow
        # (prefills of new lengths, concat caches) would otherwise double it again and again.
        "arena_extend_strategy": "kSameAsRequested",
    }


def _ranges(config: ModelConfig, stage: str) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of each named dimension of a graph's inputs."""
    batch = (1, 1, MAX_BATCH)
    if stage == "codec":
        return {"batch": batch, "frames": (1, CODEC_OPT_FRAMES, CODEC_MAX_FRAMES)}
    if stage == "fine":
        return {"batch": batch, "seq": (1, FINE_WINDOW, FINE_WINDOW)}
    block = getattr(config, stage).block_size
    past = (block, block, block) if config.kv_cache == "inplace" else (0, block // 2, block - 1)
    return {"batch": batch, "seq": (1, 1, block), "past": past}  # one-token steps are the common shape


def _input_shape(config: ModelConfig, stage: str, name: str) -> tuple | None:
    """An input's shape in named dimensions and fixed sizes; None for scalars (past_length, pred_idx)."""
    if name in ("input_ids", "merge_ids"):
        return ("batch", "seq")
    if name.startswith(("past_key.", "past_value.")):
        gpt = getattr(config, stage)
        return ("batch", gpt.n_head, "past", gpt.head_dim)
    if name == "codes":
        return ("batch", "seq", N_FINE_CODEBOOKS) if stage == "fine" else ("batch", N_FINE_CODEBOOKS, "frames")
    return None


def trt_profile(config: ModelConfig, stage: str) -> dict[str, str]:
    """TensorRT's trt_profile_{min,opt,max}_shapes for one graph, e.g. 'input_ids:1x1,past_key.0:1x12x0x64'."""
    ranges = _ranges(config, stage)
    profile = {}
    for i, level in enumerate(("min", "opt", "max")):
        shapes = []
        for name in config.graphs[stage].inputs:
            shape = _input_shape(config, stage, name)
            if shape is not None:
                dims = [ranges[d][i] if isinstance(d, str) else d for d in shape]
                shapes.append(f"{name}:{'x'.join(map(str, dims))}")
        profile[f"trt_profile_{level}_shapes"] = ",".join(shapes)
    return profile


def _graph_stage(graph: Path) -> tuple[ModelConfig, str] | None:
    """The model directory's config and the stage whose graph file this is (None outside a model directory)."""
    if not (graph.parent / CONFIG_FILE).is_file():
        return None
    config = ModelConfig.load(graph.parent)
    for stage, info in config.graphs.items():
        if info.file == graph.name:
            return config, stage
    return None


def tensorrt_options(graph: Path, fp16: bool, cache_dir: Path) -> dict:
    opts = {
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }
    found = _graph_stage(graph)
    if found is None:
        logger.warning("%s is not in a model directory: TensorRT gets no optimisation profile and "
                       "builds an engine for each new input shape", graph)
    else:
        opts.update(trt_profile(*found))
    return opts


def session_providers(graph: Path, placement: Placement, fp16: bool, trt_cache: Path | None = None,
                      cuda_graph: bool = False) -> list:
    """(provider, options) pairs for a session of `graph`, in the placement's order.

    cuda_graph: CUDA captures the session's run once and replays it (step-only graphs, whose
    inputs and outputs stay at fixed device addresses; see decoder.FixedStep)."""
    providers = []
    for name in placement.running:
        if name == CUDA:
            providers.append((name, {**cuda_options(), **({"enable_cuda_graph": "1"} if cuda_graph else {})}))
        elif name == TENSORRT:
            cache = Path(trt_cache) if trt_cache is not None else trt_cache_dir(graph.parent)
            cache.mkdir(parents=True, exist_ok=True)
            providers.append((name, tensorrt_options(graph, fp16, cache)))
        else:
            providers.append((name, {}))
    return providers
