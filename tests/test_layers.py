"""The runtime needs nothing of export: no import of it, by name or otherwise; the exporter that makes
a missing default model comes from above (the command line, Suno's functions) as an argument."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bark_onnx

RUNTIME = Path(bark_onnx.__file__).parent / "runtime"
BELOW_THE_RUNTIME = ("bark_onnx.runtime", "bark_onnx.kernels", "bark_onnx.version")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in a runtime module, relative ones resolved."""
    package = ".".join(path.relative_to(RUNTIME.parent.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names
                                                if node.level]
    return found


def test_the_runtime_imports_nothing_of_export_or_above_it():
    """Statically: every bark_onnx module a runtime file imports is the runtime's, the kernels' or the version."""
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 30
    wrong = [f"{path.relative_to(RUNTIME)}:{line} imports {name}" for path in files for line, name in _imports(path)
             if name.split(".")[0] == "bark_onnx" and not name.startswith(BELOW_THE_RUNTIME)]
    assert not wrong, wrong


def test_the_runtime_names_no_export_module_for_importlib():
    """No import by name either: no `import_module` or `__import__` call, and no string that names an
    export module (what importlib, pkgutil or an entry point could be handed)."""
    for path in sorted(RUNTIME.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                assert called not in ("import_module", "__import__"), f"{path.relative_to(RUNTIME)}:{node.lineno}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "bark_onnx.export" not in node.value, f"{path.relative_to(RUNTIME)}:{node.lineno}"


BLOCK_EXPORT = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "bark_onnx.export" or name.startswith("bark_onnx.export."):
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")


def test_the_runtime_runs_with_export_blocked(model_dirs, tmp_path):
    """Every runtime module imports, a model loads and speaks, with bark_onnx.export unimportable;
    `say`'s load without a model then asks the exporter it is handed, which says which extra to install."""
    suno = tmp_path / "cache" / "suno" / "bark_v0"  # Suno's files present: the export would not need a network
    suno.mkdir(parents=True)
    for name in ("text.pt", "coarse.pt", "fine.pt"):
        (suno / name).write_bytes(b"")
    script = BLOCK_EXPORT + textwrap.dedent(f"""
        import importlib, os, pkgutil
        os.environ["XDG_CACHE_HOME"] = {str(tmp_path / "cache")!r}
        import bark_onnx, bark_onnx.runtime
        from bark_onnx import Bark, BarkOnnxError
        from bark_onnx.first_use import export_on_first_use
        from bark_onnx.runtime import commands
        for module in pkgutil.walk_packages(bark_onnx.runtime.__path__, "bark_onnx.runtime."):
            importlib.import_module(module.name)
        audio = Bark.load({str(model_dirs["suno-tiny"])!r}).generate("hi", seed=0, silent=True,
                                                                  max_gen_duration_s=0.3)
        assert audio.size > 0
        try:
            commands._load(None, "cpu", None, True, exporter=export_on_first_use)
        except BarkOnnxError as err:
            print(err)
        assert not [m for m in sys.modules if m.startswith("bark_onnx.export")]
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "needs the export extra" in proc.stdout


def test_the_command_layer_hands_the_exporter_down():
    from bark_onnx.cli import build_parser
    from bark_onnx.first_use import export_on_first_use

    parser = build_parser()
    assert parser.parse_args(["say", "hi", "--out", "a.wav"]).exporter is export_on_first_use
    assert parser.parse_args(["serve"]).exporter is export_on_first_use


def test_preload_models_hands_the_exporter_down(monkeypatch):
    from bark_onnx import compat
    from bark_onnx.first_use import export_on_first_use

    seen = {}

    def model_or_default(model, small=True, progress=True, providers=None, offline=False, exporter=None):
        seen["exporter"] = exporter
        raise bark_onnx.BarkOnnxError("stop here")

    monkeypatch.delenv("BARK_ONNX_MODEL", raising=False)
    monkeypatch.setattr(compat, "_MODEL", None)
    monkeypatch.setattr(compat, "model_or_default", model_or_default)
    with pytest.raises(bark_onnx.BarkOnnxError, match="stop here"):
        compat.preload_models()
    assert seen["exporter"] is export_on_first_use


def test_a_missing_default_model_is_made_by_the_exporter_given(model_dirs, monkeypatch, tmp_path):
    from bark_onnx.runtime import commands
    from bark_onnx.runtime.model.cache import cached_model_dir, ensure_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    suno = tmp_path / "suno" / "bark_v0"
    suno.mkdir(parents=True)
    for name in ("text.pt", "coarse.pt", "fine.pt"):
        (suno / name).write_bytes(b"")
    with pytest.raises(bark_onnx.BarkOnnxError, match="no exporter was given"):
        ensure_model(True, providers=["cpu"])
    calls = []

    def exporter(source, target, *, precision, progress):
        calls.append((source, target, precision, progress))
        return Path(shutil.copytree(model_dirs["suno-tiny"], target))

    tts = commands._load(None, "cpu", None, True, exporter=exporter)
    try:
        target = cached_model_dir(True, providers=["cpu"])
        assert calls == [(str(suno / "text.pt"), target, "int8", False)] and tts.model_dir == target
    finally:
        tts.close()
    commands._load(None, "cpu", None, True, exporter=exporter).close()  # in the cache now: not exported again
    assert len(calls) == 1
