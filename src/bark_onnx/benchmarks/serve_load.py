"""`bark-onnx bench serve`: a bounded load on a speech server, then a soak.

Closed loop: at each concurrency (1x and 2x the engine's max batch, times the
replicas behind a Ray Serve deployment), that many
clients send streamed pcm requests back to back until the level's count is
sent; each request's time to first audio (first body byte) and duration are
recorded. Reported per level: requests per minute, time-to-first-audio p50
and p95, errors (any answer other than 200, or a broken stream) and 429s. The
soak sends a few hundred requests at the max batch and reads the server's
resident memory from /metrics before and after. With `--model` it starts
its own server on 127.0.0.1 (any free port; `--replicas N`: `serve --ray` with N
replicas on a local Ray instance) and stops it at the end (`--size`:
on a random-weight model of Bark's shapes, so it runs offline); with `--url` it
loads a running one. Every loop is bounded by counts and by
`--time-limit`.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .report import write_json

TEXT = "Hello, my name is Suno. And, uh, I like pizza. [laughs] But I also have other interests."
BANNER = re.compile(r"bark-onnx: serving \S+ on (http://\S+)")


class ServerProcess:
    """`bark-onnx serve` in a child process on 127.0.0.1 and a free port; `url` once it listens."""

    def __init__(self, model: str | Path, *args: str, env: dict | None = None, start_timeout: float = 300):
        cmd = [sys.executable, "-m", "bark_onnx.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        found: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(found,), daemon=True).start()
        try:
            self.url = found.get(timeout=start_timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError("the server did not start:\n" + self.log) from None
        if self.url is None:
            raise RuntimeError(f"the server exited ({self.proc.wait()}):\n" + self.log)

    def _read(self, found: queue.Queue) -> None:
        for line in self.proc.stderr:  # drained to the end, so the child never blocks on a full pipe
            self.lines.append(line)
            match = BANNER.search(line)
            if match:
                found.put(match.group(1))
        found.put(None)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (comments dropped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value.replace("+Inf", "inf"))
    return out


@dataclass
class Outcome:
    status: int  # 0: no answer (connection error)
    first_audio_s: float | None
    seconds: float
    audio_bytes: int
    error: str | None = None


async def one_request(client, url: str, body: dict, headers: dict) -> Outcome:
    start = time.perf_counter()
    first, size = None, 0
    try:
        async with client.stream("POST", f"{url}/v1/audio/speech", json=body, headers=headers) as resp:
            async for data in resp.aiter_raw():
                if data and first is None:
                    first = time.perf_counter() - start
                size += len(data)
            status = resp.status_code
    except Exception as err:  # a refused connection, a cut stream, a timeout: counted as an error
        return Outcome(0, first, time.perf_counter() - start, size, f"{type(err).__name__}: {err}")
    error = None if status == 200 else f"HTTP {status}"
    return Outcome(status, first, time.perf_counter() - start, size, error)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


async def run_level(url: str, concurrency: int, n_requests: int, body: dict, headers: dict, deadline: float,
                    request_timeout: float) -> dict:
    """`concurrency` clients send `n_requests` in all (fewer if the deadline passes first)."""
    import httpx

    counter = iter(range(n_requests))
    outcomes: list[Outcome] = []

    async def client_loop(client):
        for i in counter:
            if time.perf_counter() > deadline:
                return
            outcomes.append(await one_request(client, url, {**body, "seed": i}, headers))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ok = [o for o in outcomes if o.status == 200]
    ttfa = [o.first_audio_s for o in ok if o.first_audio_s is not None]
    return {
        "concurrency": concurrency, "sent": len(outcomes), "ok": len(ok),
        "errors": len(outcomes) - len(ok), "rejected_429": sum(o.status == 429 for o in outcomes),
        "elapsed_s": round(elapsed, 3), "requests_per_min": round(len(ok) / elapsed * 60, 2) if elapsed else None,
        "ttfa_p50_s": _percentile(ttfa, 50), "ttfa_p95_s": _percentile(ttfa, 95),
        "duration_p50_s": _percentile([o.seconds for o in ok], 50),
        "audio_s": round(sum(o.audio_bytes for o in ok) / 2 / 24000, 2),
        "first_errors": sorted({o.error for o in outcomes if o.error})[:5],
    }


def _metrics(url: str, headers: dict) -> dict[str, float]:
    import httpx

    return parse_metrics(httpx.get(f"{url}/metrics", headers=headers, timeout=30).text)


async def bench(url: str, requests: int, soak: int, body: dict, headers: dict, time_limit: float,
                request_timeout: float, report=print, replicas: int = 1) -> dict:
    """`replicas`: how many engines serve `url` (Ray Serve); each load level scales with them. The
    memory figures are then those of the replica that answered /metrics."""
    deadline = time.perf_counter() + time_limit
    before = _metrics(url, headers)
    max_batch = int(before["bark_onnx_max_batch"])
    full = max_batch * replicas
    report(f"server {url}: max batch {max_batch}, {replicas} replica{'s' if replicas > 1 else ''}")
    await run_level(url, 1, 1, body, headers, deadline, request_timeout)  # warm-up, not counted
    levels = {}
    for name, concurrency in (("1x", full), ("2x", 2 * full)):
        levels[name] = await run_level(url, concurrency, requests, body, headers, deadline, request_timeout)
        report(f"{name} ({concurrency} clients): {json.dumps(levels[name])}")
    result = {"url": url, "max_batch": max_batch, "replicas": replicas, "body": body, "levels": levels}
    if soak:
        rss_before = _metrics(url, headers)["process_resident_memory_bytes"]
        level = await run_level(url, full, soak, body, headers, deadline, request_timeout)
        rss_after = _metrics(url, headers)["process_resident_memory_bytes"]
        result["soak"] = {**level, "rss_before_mb": round(rss_before / 2 ** 20, 1),
                          "rss_after_mb": round(rss_after / 2 ** 20, 1)}
        report(f"soak: {json.dumps(result['soak'])}")
    result["time_limit_reached"] = time.perf_counter() > deadline
    return result


def table(result: dict) -> str:
    rows = ["| load | clients | sent | ok | errors | 429 | requests/min | TTFA p50 s | TTFA p95 s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in [*result["levels"].items(), *([("soak", result["soak"])] if "soak" in result else [])]:
        rows.append(f"| {name} | {r['concurrency']} | {r['sent']} | {r['ok']} | {r['errors']} | {r['rejected_429']} "
                    f"| {r['requests_per_min']} | {r['ttfa_p50_s']} | {r['ttfa_p95_s']} |")
    if "soak" in result:
        s = result["soak"]
        rows.append(f"\nserver resident memory: {s['rss_before_mb']} MB before the soak, {s['rss_after_mb']} MB after")
    return "\n".join(rows)


def server_args(args) -> list[str]:
    """The options of the `bark-onnx serve` that bench serve starts."""
    extra = ["--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    if args.replicas:
        extra += ["--ray", "--replicas", str(args.replicas)]
    return extra


def run(args) -> int:
    try:
        import httpx  # noqa: F401
    except ImportError:
        print("bark-onnx: bench serve needs httpx: pip install 'bark-onnx[bench]'", file=sys.stderr)
        return 2
    if sum(map(bool, (args.model, args.size, args.url))) != 1:
        print("bark-onnx: bench serve needs one of --model or --size (start a server) or --url (a running one)",
              file=sys.stderr)
        return 2
    model = args.model
    if args.size:
        from .prepare import prepare  # writes and exports a random-weight checkpoint: the export extra

        model = prepare(args.size, [args.precision])[f"onnx-{args.precision}"]
    body = {"model": "bark", "input": args.text, "response_format": "pcm"}
    if args.max_gen_duration_s:
        body["max_gen_duration_s"] = args.max_gen_duration_s
    key = args.api_key or os.environ.get("BARK_ONNX_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.replicas is not None and args.replicas < 1:
        print(f"bark-onnx: --replicas must be at least 1, got {args.replicas}", file=sys.stderr)
        return 2
    try:
        server = ServerProcess(model, *server_args(args)) if model else None
    except RuntimeError as err:  # its log says why
        print(f"bark-onnx: {err}", file=sys.stderr)
        return 1
    try:
        url = server.url if server else args.url.rstrip("/")
        result = asyncio.run(bench(url, args.requests, args.soak, body, headers, args.time_limit,
                                   args.request_timeout, say, args.replicas or 1))
    finally:
        if server:
            server.stop()
    text = table(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        say(f"wrote {out}")
    return 0
