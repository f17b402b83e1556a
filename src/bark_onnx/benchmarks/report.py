"""Turn pytest-benchmark's JSON into the results: table, ratios, roofline, chart; compare two runs."""

from __future__ import annotations

import io
import json
import platform
from pathlib import Path

from bark_onnx.runtime.files import write_atomic

REFERENCES = ("transformers", "reference")
STAGE_ORDER = ("semantic", "coarse", "fine", "codec", "segment")


def write_json(path, results) -> None:
    """A measurement as JSON at `path`, written whole or not at all."""
    write_atomic(path, json.dumps(results, indent=2) + "\n")


def print_json(results: dict, out: str | None = None) -> None:
    """Print a measurement as JSON, and write it to `out` too when given."""
    print(json.dumps(results, indent=2))
    if out:
        write_json(out, results)


def cpu_flags() -> str:
    """The CPU features that decide the int8 kernels (AVX2, AVX-512, VNNI dot products)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags) or "none of avx2/avx512"


def summarize(pytest_json: dict, extra: dict | None = None) -> dict:
    """{'backends': {backend: {stage: stats}}, 'ratios': ..., 'rtf': ...} from a pytest-benchmark run."""
    backends: dict[str, dict] = {}
    info: dict[str, dict] = {}
    size = None
    for bench in pytest_json["benchmarks"]:
        x, s = bench["extra_info"], bench["stats"]
        size = x["size"]
        backends.setdefault(x["backend"], {})[x["stage"]] = {
            "median_s": s["median"], "min_s": s["min"], "max_s": s["max"], "iqr_s": s["iqr"],
            "rounds": s["rounds"], "work": x["work"], "unit": x["unit"], "per_s": x["work"] / s["median"],
        }
        info[x["backend"]] = _info(info.get(x["backend"], {}), x)
    ratios = {}
    for ref in REFERENCES:
        if ref not in backends:
            continue
        ratios[ref] = {b: {st: stats[st]["median_s"] / backends[ref][st]["median_s"]
                           for st in stats if st in backends[ref]} for b, stats in backends.items()}
    rtf = {b: st["segment"]["median_s"] / st["segment"]["work"] for b, st in backends.items() if "segment" in st}
    machine = pytest_json.get("machine_info", {})
    return {
        "size": size, "machine": {"cpu": machine.get("cpu", {}).get("brand_raw", platform.processor()),
                                  "cores": machine.get("cpu", {}).get("count"), "python": platform.python_version()},
        "datetime": pytest_json.get("datetime"), "backends": backends, "info": info, "ratios": ratios,
        "real_time_factor": rtf, **(extra or {}),
    }


def _info(seen: dict, x: dict) -> dict:
    """A backend's load time, sizes and memory peaks over its stages (GPU memory where it ran on one)."""
    gpu = [v for v in (seen.get("gpu_mb"), x.get("gpu_mb")) if v is not None]
    return {"load_s": x["load_s"], "model_mb": x["model_mb"], "runs_on": x.get("runs_on"),
            "peak_rss_mb": max(seen.get("peak_rss_mb", 0), x["peak_rss_mb"]),
            "gpu_mb": max(gpu) if gpu else None, "gpu_mb_source": x.get("gpu_mb_source") or seen.get("gpu_mb_source")}


def _num(x: float | None) -> str:
    """Two decimals, or a dash where the run has no such figure (no segment timed, say)."""
    return "-" if x is None or x != x else f"{x:.2f}"


def table(results: dict) -> str:
    """A markdown table: median (spread) per stage, ratios to the references, RTF, memory, size."""
    backends = results["backends"]
    stages = [s for s in STAGE_ORDER if any(s in v for v in backends.values())]
    lines = [f"bark-{results['size']} shapes, random weights; {results['machine']['cpu']}; "
             f"median of the rounds (min-max), seconds", ""]
    gpu = any(i.get("gpu_mb") is not None for i in results["info"].values())
    head = ("| backend | " + "runs on | " * gpu + " | ".join(stages)
            + " | vs transformers | vs reference | RTF | peak RSS MB | " + "GPU MB | " * gpu + "model MB | load s |")
    lines += [head, "|" + "---|" * (len(stages) + 7 + 2 * gpu)]
    for name, stats in backends.items():
        cells = [f"{stats[s]['median_s']:.2f} ({stats[s]['min_s']:.2f}-{stats[s]['max_s']:.2f})" if s in stats else ""
                 for s in stages]
        ratio = [_num(results["ratios"].get(ref, {}).get(name, {}).get("segment")) for ref in REFERENCES]
        info = results["info"][name]
        rtf = _num(results["real_time_factor"].get(name))
        where = f"{info.get('runs_on') or '-'} | " * gpu
        gpu_mb = ("-" if info.get("gpu_mb") is None else f"{info['gpu_mb']:.0f}") + " | " if gpu else ""
        lines.append(f"| {name} | {where}" + " | ".join(cells) + f" | {ratio[0]} | {ratio[1]} | {rtf} | "
                     f"{info['peak_rss_mb']:.0f} | {gpu_mb}{info['model_mb']:.0f} | {info['load_s']:.1f} |")
    for ref in REFERENCES:
        if ref in results["ratios"]:
            lines += ["", f"Time relative to {ref}, per stage:", "",
                      "| backend | " + " | ".join(stages) + " |", "|" + "---|" * (len(stages) + 1)]
            for name, per in results["ratios"][ref].items():
                lines.append(f"| {name} | " + " | ".join(f"{per[s]:.2f}" if s in per else "" for s in stages) + " |")
    features = [(n, st) for n, st in backends.items() if "first_audio" in st or "semantic_b8" in st]
    if features:
        lines += ["", "Streaming and batching (this runtime):", "",
                  "| backend | first audio s (min-max) | one-shot segment s | first audio / one-shot | "
                  "semantic tok/s batch 1 | batch 8 | batch 8 / batch 1 |", "|---|---|---|---|---|---|---|"]
        for name, st in features:
            fa, seg, b1, b8 = (st.get(k) for k in ("first_audio", "segment", "semantic_b1", "semantic_b8"))
            cells = [f"{fa['median_s']:.2f} ({fa['min_s']:.2f}-{fa['max_s']:.2f})" if fa else "",
                     f"{seg['median_s']:.2f}" if seg else "",
                     f"{fa['median_s'] / seg['median_s']:.2f}" if fa and seg else "",
                     f"{b1['per_s']:.1f}" if b1 else "", f"{b8['per_s']:.1f}" if b8 else "",
                     f"{b8['per_s'] / b1['per_s']:.2f}x" if b1 and b8 else ""]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    bounded = [s for s in stages if s != "segment"]  # the roofline bounds single stages
    if "roofline" in results and bounded:
        lines += ["", "Roofline (lower bound from shapes and this machine's measured rates) vs measured:", "",
                  "| backend | " + " | ".join(bounded) + " |",
                  "|" + "---|" * (len(bounded) + 1)]
        for name, est in results["roofline"]["estimates"].items():
            cells = [f"{backends[name][s]['median_s']:.2f} / {est[s]:.2f} = {backends[name][s]['median_s'] / est[s]:.2f}x"
                     if s in backends.get(name, {}) else "" for s in bounded]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        rates = results["roofline"]["rates"]
        lines.append(f"\nrates: sgemm {rates['sgemm_flops'] / 1e9:.0f} GFLOP/s, "
                     f"weight streaming {rates['stream_bytes'] / 1e9:.1f} GB/s")
    if gpu:
        sources = sorted({f"{n}: {i['gpu_mb_source']}" for n, i in results["info"].items() if i.get("gpu_mb_source")})
        lines += ["", "GPU MB, measured as: " + "; ".join(sources)]
    if "quality" in results:
        lines += ["", "Precision price (teacher-forced greedy agreement with fp32 on the CPU provider; "
                  "largest logit error):", "",
                  "| precision | semantic | coarse | fine |", "|---|---|---|---|"]
        for precision, per in results["quality"].items():
            precision = f"{precision} ({per['runs_on']})" if per.get("runs_on") else precision
            lines.append(f"| {precision} | " + " | ".join(
                f"{per[s]['agreement'] * 100:.1f}% / {per[s]['max_logit_error']:.3f}" for s in ("semantic", "coarse", "fine"))
                + " |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = results["backends"]
    stages = [s for s in STAGE_ORDER[:-1] if any(s in v for v in backends.values())]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(backends))
    for i, (name, stats) in enumerate(backends.items()):
        xs = [j + i * width for j in range(len(stages))]
        ys = [stats.get(s, {}).get("median_s", 0) for s in stages]
        errs = [[stats[s]["median_s"] - stats[s]["min_s"] if s in stats else 0 for s in stages],
                [stats[s]["max_s"] - stats[s]["median_s"] if s in stats else 0 for s in stages]]
        ax.bar(xs, ys, width, yerr=errs, label=name, capsize=2)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(stages))], stages)
    ax.set_ylabel("seconds (median, min-max)")
    ax.set_title(f"Bark, one 13 s segment, bark-{results['size']} shapes: time per stage")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, png.getvalue())


def compare(baseline: dict, current: dict, threshold: float, backends: list[str] | None = None) -> list[str]:
    """Regressions: (backend, stage) whose median grew by more than `threshold` (0.15 = 15 %)."""
    failures = []
    for name, stats in current["backends"].items():
        if backends and name not in backends:
            continue
        for stage, s in stats.items():
            base = baseline.get("backends", {}).get(name, {}).get(stage)
            if base is None:
                continue
            change = s["median_s"] / base["median_s"] - 1
            if change > threshold:
                failures.append(f"{name} {stage}: {base['median_s']:.3f} s -> {s['median_s']:.3f} s "
                                f"(+{change * 100:.0f} %, threshold {threshold * 100:.0f} %)")
    return failures


def load(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    return summarize(data) if "benchmarks" in data else data
