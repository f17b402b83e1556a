"""Everything a server is told, in one object: `ServerSettings`.

`bark-onnx serve` and `serve --ray` read it from their arguments, a config file
(`--config FILE`, JSON or TOML) or both (arguments win); a Ray Serve config's
`args` (ray_app.build) are the same keys. A key is the long option's name with
underscores (`--max-batch` is `max_batch`). Every default is written here once,
every value checked once, when the object is made.

    model            model directory or hub id (None: suno/bark-small, exported into the cache on first use)
    providers        e.g. "cuda,cpu" (None: CUDA where it starts, then the CPU)
    threads          CPU threads per session (None: the cores available; with ray: 1, also the CPUs a replica reserves)
    max_batch        requests generated together; max_queue: requests that may wait beyond those
    offline          never use the network
    host, port       where to listen (port 0: any free port)
    served_model_name  what clients name in `model` (None: the model's folder or hub name)
    api_key          require `Authorization: Bearer KEY` on /v1 (None: $BARK_ONNX_API_KEY, else no key)
    max_input_chars  the longest input accepted; request_timeout, drain_timeout: seconds
    instance         the name in every response's X-Bark-Onnx-Instance header (None: the host name)
    ray              serve on Ray Serve; replicas or autoscale ("MIN:MAX"), ray_address, gpus_per_replica
"""

from __future__ import annotations

import json
import math
import numbers
import os
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from ..runtime.engine.scheduler import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, check_limits
from ..runtime.errors import BarkOnnxError, InputError
from ..runtime.model.cache import HUB_MODELS
from ..runtime.sessions.providers import names_a_gpu, provider_names

# Model names a client may send besides the served name: OpenAI's speech models and "bark",
# so that an existing app works by changing only its base URL.
MODEL_ALIASES = ("bark", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
INSTANCE_HEADER = "X-Bark-Onnx-Instance"
API_KEY_ENV = "BARK_ONNX_API_KEY"
RAY_ONLY = ("replicas", "autoscale", "ray_address", "gpus_per_replica")


def _positive(name: str, value: Any, kind=numbers.Integral, zero: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, kind) and math.isfinite(value) \
        and (value >= 0 if zero else value > 0)
    if not ok:
        what = "an integer" if kind is numbers.Integral else "a number"
        what = f"{what} >= 0" if zero else f"a positive {what.split()[1]}"
        raise InputError(f"{name} must be {what}, got {value!r}", name)


def parse_autoscale(value: Any) -> tuple[int, int]:
    """'MIN:MAX' (or a pair) -> (MIN, MAX), with 0 <= MIN <= MAX and MAX >= 1."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    low, sep, high = str(value).partition(":")
    try:
        pair = (int(low), int(high))
    except ValueError:
        pair = None
    if not sep or pair is None or pair[0] < 0 or pair[1] < 1 or pair[0] > pair[1]:
        raise InputError(f"autoscale takes MIN:MAX replicas with 0 <= MIN <= MAX and MAX >= 1, got {value!r}",
                         "autoscale")
    return pair


@dataclass(frozen=True)
class ServerSettings:
    """See the module docstring for each field."""

    model: str | None = None
    providers: tuple[str, ...] | None = None
    threads: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue: int = DEFAULT_MAX_QUEUE
    offline: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    aliases: tuple[str, ...] = MODEL_ALIASES
    api_key: str | None = None
    max_input_chars: int = 4096
    request_timeout: float = 600.0
    drain_timeout: float = 30.0
    retry_after: int = 1  # seconds a 429 (queue full) or 503 (shutting down) tells the client to wait
    instance: str | None = None
    ray: bool = False
    replicas: int | None = None
    autoscale: tuple[int, int] | None = None
    ray_address: str | None = None
    gpus_per_replica: float | None = None

    def __post_init__(self):
        if self.model is not None and (not isinstance(self.model, (str, Path)) or not str(self.model)):
            raise InputError("model must be a model directory or a hub id (org/name)", "model")
        if self.model is not None:
            object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "providers", provider_names(self.providers))
        if self.threads is not None:
            _positive("threads", self.threads)
        check_limits(self.max_batch, self.max_queue)
        for name in ("offline", "ray"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}", name)
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise InputError(f"port must lie in [0, 65535], got {self.port!r}", "port")
        for name in ("host", "served_model_name", "api_key", "instance", "ray_address"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(f"{name} must be a non-empty string, got {value!r}", name)
        _positive("max_input_chars", self.max_input_chars)
        _positive("request_timeout", self.request_timeout, numbers.Real)
        _positive("drain_timeout", self.drain_timeout, numbers.Real, zero=True)
        _positive("retry_after", self.retry_after, zero=True)
        given = [name for name in RAY_ONLY if getattr(self, name) is not None]
        if given and not self.ray:
            raise InputError(f"{', '.join('--' + n.replace('_', '-') for n in given)} only apply with --ray "
                             "(serve on Ray Serve); add --ray", given[0])
        if self.replicas is not None:
            _positive("replicas", self.replicas)
        if self.replicas is not None and self.autoscale is not None:
            raise InputError("give replicas or autoscale, not both", "autoscale")
        if self.autoscale is not None:
            object.__setattr__(self, "autoscale", parse_autoscale(self.autoscale))
        if self.gpus_per_replica is not None:
            _positive("gpus_per_replica", self.gpus_per_replica, numbers.Real, zero=True)

    # ------------------------------------------------------------ where settings come from

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "settings") -> ServerSettings:
        """Settings from a mapping of field names (a config file, a Ray Serve config's args); a key
        missing here takes its default, and api_key falls back to $BARK_ONNX_API_KEY."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(unknown)} in {where}; the keys are {', '.join(sorted(known))}",
                             unknown[0])
        values = dict(values)
        if not values.get("api_key"):
            values["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> ServerSettings:
        """Settings from a JSON or TOML file, `overrides` (e.g. the command line's) on top."""
        return cls.from_dict({**read_config(path), **(overrides or {})}, str(path))

    @classmethod
    def from_args(cls, args) -> ServerSettings:
        """Settings from `bark-onnx serve`'s arguments: those given on the command line, over the
        --config file's, over the defaults."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        if getattr(args, "config", None):
            return cls.from_file(args.config, given)
        return cls.from_dict(given, "the command line")

    # ------------------------------------------------------------ what follows from them

    @property
    def model_name(self) -> str:
        """The served model's name: served_model_name, else the model's folder or hub name."""
        if self.served_model_name:
            return self.served_model_name
        return Path((self.model or HUB_MODELS[True]).rstrip("/")).name or "bark"

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every name `model` may take: the served name first, then the aliases."""
        return (self.model_name, *[a for a in self.aliases if a != self.model_name])

    @property
    def instance_name(self) -> str:
        return self.instance or socket.gethostname()

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: the input at JSON's worst escaping (12 bytes a character), plus room."""
        return 12 * self.max_input_chars + 64 * 1024

    @property
    def session_threads(self) -> int | None:
        """CPU threads per session: as given; on Ray 1 by default (each replica reserves that many CPUs)."""
        return self.threads if self.threads is not None or not self.ray else 1

    @property
    def replica_gpus(self) -> float:
        """The GPUs each Ray replica reserves: as given, else 1 when the providers name CUDA or TensorRT."""
        if self.gpus_per_replica is not None:
            return float(self.gpus_per_replica)
        return 1.0 if names_a_gpu(self.providers) else 0.0

    @property
    def most_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else (self.replicas or 1)

    @property
    def capacity(self) -> int:
        """The requests one engine holds: generating, then waiting."""
        return self.max_batch + self.max_queue


def read_config(path: str | Path) -> dict:
    """A config file's top-level table: .json, or .toml (Python 3.11 and later)."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".toml"):
        raise BarkOnnxError(f"the config file {path} must end in .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BarkOnnxError(f"cannot read the config file {path} ({err}); give a JSON or TOML file") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except ImportError:
        raise BarkOnnxError("TOML config files need Python 3.11 or later; use JSON here") from None
    except ValueError as err:  # json's and tomllib's decode errors
        raise BarkOnnxError(f"the config file {path} is not valid {path.suffix[1:].upper()} ({err})") from None
    if not isinstance(values, dict):
        raise BarkOnnxError(f"the config file {path} must hold a table of settings at its top level")
    return values
