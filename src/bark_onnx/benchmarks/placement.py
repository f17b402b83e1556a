"""Which provider runs each node of a model directory's graphs, read from ONNX Runtime's profiles.

Each graph runs a prefill and a one-token step (a window, for the fine graph;
a short decode, for the codec) in a session with profiling on; the profile
names the provider of every node that ran. A heavy node (matrix products,
attention, convolutions, the LSTM, normalisations, anything holding a large
weight such as an embedding Gather, anything that outputs floating-point data)
on the CPU provider while the sessions run on a GPU means host-device copies
on every call: that is the failure this reports. Shape arithmetic (int64) on
the CPU is expected: ONNX Runtime puts it there on purpose.

    python -m bark_onnx.benchmarks.placement MODEL_DIR --providers cuda,cpu --out placement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bark_onnx.runtime.model.config import STAGES, ModelConfig
from bark_onnx.runtime.sessions.gpu_options import session_providers
from bark_onnx.runtime.sessions.providers import CPU, GPU_PROVIDERS
from bark_onnx.runtime.sessions.session import make_placement

from .report import write_json

HEAVY_OPS = {
    "MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger",
    "GroupQueryAttention", "MultiHeadAttention", "Attention", "Conv", "ConvTranspose", "LSTM",
    "LayerNormalization", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "Softmax", "Elu", "Einsum",
}
FLOAT_TYPES = {"float", "float16", "bfloat16", "double"}
HEAVY_WEIGHT_BYTES = 1 << 20  # a node holding 1 MiB of weights (an embedding table) is heavy whatever its op
PREFILL = 16
_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def _feed(session: ort.InferenceSession, config: ModelConfig, stage: str, seq: int, past: int) -> dict:
    """Inputs of the graph's shapes: zeros (valid tokens and codes), `seq` new positions after `past`."""
    block = getattr(config, stage).block_size if stage != "codec" else 0
    dims = {"batch": 1, "seq": seq, "max_len": block, "past_len": past, "frames": seq}
    feed = {}
    for arg in session.get_inputs():
        shape = [dims.get(d, 1) if isinstance(d, str) else d for d in arg.shape]
        feed[arg.name] = np.zeros(shape, _TYPES[arg.type])
    if "merge_ids" in feed:
        feed["merge_ids"][:] = config.graphs[stage].merge_none_id
    if "past_length" in feed:
        feed["past_length"] = np.full(feed["input_ids"].shape[0], past, np.int64)  # one per row
    if "pred_idx" in feed:
        feed["pred_idx"] = np.array(config.fine.n_codes_given + 1, np.int64)
    return feed


def _calls(config: ModelConfig, stage: str) -> list[tuple[int, int]]:
    """(new positions, cached positions) per call: a prefill and a step, a step alone (step-only
    graphs), a fine window, a codec decode."""
    if stage.endswith("_step"):
        return [(1, PREFILL)]
    if stage == "fine":
        return [(config.fine.block_size, 0)]
    if stage == "codec":
        return [(75, 0)]  # one second of frames
    return [(PREFILL, 0), (1, PREFILL)]


def profile_graph(model_dir: Path, config: ModelConfig, stage: str, placement, work: Path) -> list[dict]:
    """Run the graph with profiling on; returns the profile's node events."""
    info = config.step_graphs[stage[: -len("_step")]] if stage.endswith("_step") else config.graphs[stage]
    graph = model_dir / info.file
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as create_session: fused ops
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"profile-{stage}")
    session = ort.InferenceSession(str(graph), sess_options=opts,
                                   providers=session_providers(graph, placement, config.precision == "fp16"))
    for seq, past in _calls(config, stage):
        session.run(None, _feed(session, config, stage.replace("_step", ""), seq, past))
    events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]


def is_heavy(event: dict) -> bool:
    """A node that must run where the data lives: a heavy op, a large weight, or floating-point
    output (activations, logits, audio). Shape arithmetic (int64 out) may run anywhere."""
    args = event.get("args", {})
    floats = any(kind in FLOAT_TYPES for out in args.get("output_type_shape", []) for kind in out)
    return (args.get("op_name") in HEAVY_OPS or int(args.get("parameter_size", 0)) >= HEAVY_WEIGHT_BYTES
            or floats)


def summarize(events: list[dict], on_gpu: bool) -> dict:
    """Nodes per provider, and the heavy nodes that ran where they should not (the CPU, on a GPU run)."""
    nodes = {}
    for e in events:  # a node runs once per call: keep one event per node
        nodes.setdefault(e["name"][: -len("_kernel_time")], e)
    providers = Counter(e["args"].get("provider", "?") for e in nodes.values())
    misplaced = [
        {"node": name, "op": e["args"].get("op_name"), "provider": e["args"].get("provider")}
        for name, e in nodes.items()
        if is_heavy(e) and ((e["args"].get("provider") not in GPU_PROVIDERS) if on_gpu
                            else e["args"].get("provider") != CPU)
    ]
    on_cpu = Counter(e["args"].get("op_name") for e in nodes.values() if e["args"].get("provider") == CPU)
    copies = sorted(name for name, e in nodes.items() if str(e["args"].get("op_name", "")).startswith("Memcpy"))
    return {"nodes": len(nodes), "providers": dict(providers), "ops_on_cpu": dict(on_cpu), "copies": copies,
            "misplaced": misplaced}


def check_model(model_dir: Path, providers, work: Path) -> dict:
    """{'providers': [...], 'on_gpu': bool, 'graphs': {stage: summary}, 'ok': bool}."""
    config = ModelConfig.load(model_dir)
    placement = make_placement(providers)
    work.mkdir(parents=True, exist_ok=True)
    stages = [*STAGES, *(f"{s}_step" for s in config.step_graphs)]
    graphs = {stage: summarize(profile_graph(model_dir, config, stage, placement, work), placement.on_gpu)
              for stage in stages}
    return {"model": str(model_dir), "precision": config.precision, "providers": list(placement.running),
            "on_gpu": placement.on_gpu, "graphs": graphs, "ok": not any(g["misplaced"] for g in graphs.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--providers", help="e.g. cuda,cpu (default: CUDA where it starts, then the CPU)")
    parser.add_argument("--out", help="write the summary as JSON here")
    parser.add_argument("--work", default=None, help="folder for the raw profiles (default: beside --out)")
    args = parser.parse_args(argv)
    providers = args.providers.split(",") if args.providers else None
    work = Path(args.work or (Path(args.out).parent / "profiles" if args.out else "profiles"))
    result = check_model(Path(args.model_dir), providers, work)
    if args.out:
        write_json(args.out, result)
    for stage, g in result["graphs"].items():
        print(f"{stage:9s} {g['nodes']:4d} nodes  " + ", ".join(f"{p}: {n}" for p, n in g["providers"].items())
              + (f"  MISPLACED: {[m['op'] for m in g['misplaced']]}" if g["misplaced"] else ""))
    where = "a GPU provider" if result["on_gpu"] else "the CPU provider"
    if not result["ok"]:
        print(f"heavy nodes not on {where} (see the list above): they copy between host and device on every call",
              file=sys.stderr)
        return 1
    print(f"every heavy node runs on {where} ({', '.join(result['providers'])})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
