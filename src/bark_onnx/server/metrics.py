"""Prometheus text metrics: requests by route and status, the engine's queue and rows, time to first
audio, request duration, audio generated, real-time factor and the process's resident memory.

Written here in a few lines instead of a client library: one registry per app
(a process may run several, the tests do), updated from the event loop only.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from typing import Callable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RTF_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple, float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, *labels) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_num(value)}")
        return lines


class Gauge:
    """A value read when scraped."""

    def __init__(self, name: str, help: str, read: Callable[[], float], labels: dict[str, str] | None = None):
        self.name, self.help, self.read, self.labels = name, help, read, labels or {}

    def render(self) -> list[str]:
        label_text = _labels(tuple(self.labels), tuple(self.labels.values()))
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge",
                f"{self.name}{label_text} {_num(self.read())}"]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, tuple(buckets) + (math.inf,)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, n in zip(self.buckets, self.counts):
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {n}')
        lines += [f"{self.name}_sum {_num(self.sum)}", f"{self.name}_count {self.count}"]
        return lines


def resident_memory_bytes() -> float:
    """This process's resident set size now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Metrics:
    """The server's metrics; `stats` reads the engine's counters when scraped."""

    def __init__(self, stats: Callable[[], dict], model: str, instance: str):
        self.requests = Counter("bark_onnx_requests_total", "HTTP requests answered, by route and status",
                                ("route", "status"))
        self.first_audio = Histogram("bark_onnx_time_to_first_audio_seconds",
                                     "seconds from a speech request's arrival to its first audio", LATENCY_BUCKETS)
        self.duration = Histogram("bark_onnx_request_duration_seconds",
                                  "seconds from a speech request's arrival to its last byte", LATENCY_BUCKETS)
        self.rtf = Histogram("bark_onnx_real_time_factor",
                             "per completed speech request: seconds taken per second of audio", RTF_BUCKETS)
        self.audio_seconds = Counter("bark_onnx_audio_seconds_total", "seconds of audio generated")
        self._stats = stats
        self._gauges = [
            Gauge("bark_onnx_info", "the served model and this instance", lambda: 1,
                  {"model": model, "instance": instance}),
            Gauge("bark_onnx_queue_waiting", "requests waiting for a batch row", lambda: self._stats()["waiting"]),
            Gauge("bark_onnx_requests_active", "requests generating", lambda: self._stats()["active"]),
            Gauge("bark_onnx_rows_in_use", "KV-cache batch rows in use", lambda: self._stats()["rows_in_use"]),
            Gauge("bark_onnx_max_batch", "requests generated together at most", lambda: self._stats()["max_batch"]),
            Gauge("bark_onnx_max_queue", "requests that may wait", lambda: self._stats()["max_queue"]),
            Gauge("process_resident_memory_bytes", "resident memory of the server process", resident_memory_bytes),
        ]

    def _engine_counts(self) -> list[str]:
        stats = self._stats()
        name = "bark_onnx_engine_requests_total"
        lines = [f"# HELP {name} requests the engine ended, by outcome", f"# TYPE {name} counter"]
        return lines + [f'{name}{{outcome="{k}"}} {stats[k]}' for k in ("completed", "failed", "cancelled")]

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.first_audio, self.duration, self.rtf, self.audio_seconds, *self._gauges):
            lines += metric.render()
        lines += self._engine_counts()
        return "\n".join(lines) + "\n"
