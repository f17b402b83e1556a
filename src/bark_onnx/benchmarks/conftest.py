"""pytest options and fixtures of the speed benchmarks (run through `bark-onnx bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .workload import ALL_BACKENDS, ONNX_ONLY, STAGES


def pytest_addoption(parser):
    group = parser.getgroup("bark-onnx benchmarks")
    group.addoption("--bench-size", default="tiny", help="tiny, small (bark-small) or large (bark)")
    group.addoption("--bench-backends", default=ALL_BACKENDS, help="comma-separated backends")
    group.addoption("--bench-stages", default=",".join(STAGES + ("segment",) + ONNX_ONLY),
                    help="comma-separated stages (first_audio and semantic_b1/_b8 run on ONNX backends only)")
    group.addoption("--bench-rounds", type=int, default=3, help="timed rounds per stage (after a warm-up)")
    group.addoption("--bench-segment-rounds", type=int, default=2, help="timed rounds of the whole segment")
    group.addoption("--bench-threads", type=int, default=None, help="threads per backend (default: all cores)")
    group.addoption("--bench-providers", default=None, help="ONNX Runtime providers, e.g. cuda,cpu")
    group.addoption("--bench-torch-device", default="cpu", help="cpu (fp32) or cuda (fp16) for the torch backends")
    group.addoption("--bench-cache", default=None, help="where checkpoints and exports are kept")


def _backends(config) -> list[str]:
    return [b.strip() for b in config.getoption("--bench-backends").split(",") if b.strip()]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        stages = [s.strip() for s in metafunc.config.getoption("--bench-stages").split(",") if s.strip()]
        # backend-major order: one worker process is alive at a time
        cases = [(b, s) for b in _backends(metafunc.config) for s in stages
                 if b.startswith("onnx-") or s not in ONNX_ONLY]
        metafunc.parametrize("case", cases, ids=[f"{b}-{s}" for b, s in cases])


@pytest.fixture(scope="session")
def bench_paths(pytestconfig) -> dict[str, Path]:
    from .prepare import prepare

    precisions = [b[len("onnx-"):] for b in _backends(pytestconfig) if b.startswith("onnx-")]
    cache = pytestconfig.getoption("--bench-cache")
    return prepare(pytestconfig.getoption("--bench-size"), precisions, Path(cache) if cache else None)


class Workers:
    """Keeps one backend process alive at a time."""

    def __init__(self, paths, threads, providers, torch_device="cpu"):
        self.paths, self.threads, self.providers = paths, threads, providers
        self.torch_device = torch_device
        self.current = None

    def get(self, name: str):
        from .worker import Worker

        if self.current is None or self.current.name != name:
            self.close()
            self.current = Worker(name, self.paths, self.threads, self.providers, self.torch_device)
        return self.current

    def close(self):
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture(scope="session")
def workers(bench_paths, pytestconfig):
    providers = pytestconfig.getoption("--bench-providers")
    pool = Workers(bench_paths, pytestconfig.getoption("--bench-threads"), providers.split(",") if providers else None,
                   pytestconfig.getoption("--bench-torch-device"))
    yield pool
    pool.close()
