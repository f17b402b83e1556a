"""The repository's root never shadows an installed distribution.

Python puts the root on `sys.path` for a command started there (`python -m ...`,
the benchmark workers; pytest itself imports tests/, no package, by path and adds
nothing). A root folder
or module with a generic name (`kernels`, `export`, `runtime`, `benchmarks`)
would then be imported in place of a real distribution of that name: with
transformers 5.25 that is Hugging Face's `kernels`, which transformers imports
with its Bark model. The package lives under src/, so nothing at the root is a
regular package or module; a plain folder can only become a namespace package,
and any installed package of the same name comes first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _root_names() -> list[str]:
    """Names `import` could find at the root: folders and .py modules with identifier names."""
    names = []
    for entry in ROOT.iterdir():
        name = entry.stem if entry.suffix == ".py" else entry.name
        if (entry.is_dir() or entry.suffix == ".py") and name.isidentifier():
            names.append(name)
    return sorted(set(names) | {"kernels", "export", "runtime", "benchmarks"})


def test_only_bark_onnx_is_a_package_of_ours():
    assert (ROOT / "src" / "bark_onnx" / "__init__.py").is_file()
    for name in ("kernels", "export", "runtime", "benchmarks"):
        assert not (ROOT / name / "__init__.py").exists(), f"{name}/ at the root is an importable package"
    assert not list(ROOT.glob("*.py")), "a module at the root shadows any distribution of its name"


def test_installed_distributions_win_over_root_folders(tmp_path):
    """From the root, with the root first on sys.path (as pytest and `python -m` run), a package
    installed under each root name is the one imported."""
    names = _root_names()
    site = tmp_path / "site"
    for name in names:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("INSTALLED = True\n")
    script = textwrap.dedent(f"""
        import importlib, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(1, {str(site)!r})  # right after the root, as site-packages comes after it
        out = {{}}
        for name in {names!r}:
            module = importlib.import_module(name)
            out[name] = [getattr(module, "INSTALLED", False), getattr(module, "__file__", None)]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name, (installed, where) in json.loads(done.stdout).items():
        assert installed, f"`import {name}` from the repository root found {where}, not the installed package"


def test_kernels_from_the_root_is_hugging_faces(tmp_path):
    """The real case: transformers imports `kernels`; from the root it must resolve outside the
    repository (or not exist at all, where transformers does not need it)."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.insert(0, {str(ROOT)!r})
        spec = importlib.util.find_spec("kernels")
        print("" if spec is None else (spec.origin or ",".join(spec.submodule_search_locations or [])))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    where = done.stdout.strip()
    assert not where or "site-packages" in Path(where).parts, f"`import kernels` resolves to {where}"


def test_bark_onnx_imports_from_any_directory(tmp_path):
    """From a folder outside the repository, `import bark_onnx` finds this checkout's src/bark_onnx (an
    editable install, or the tests' PYTHONPATH), or an installed copy in site-packages: never a
    namespace package, nor a copy elsewhere."""
    done = subprocess.run([sys.executable, "-c", "import bark_onnx.benchmarks.cli, bark_onnx.export.exporter; "
                           "import bark_onnx; print(bark_onnx.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    where = Path(done.stdout.strip()).resolve()
    here = (ROOT / "src" / "bark_onnx" / "__init__.py").resolve()
    installed = where.parent.name == "bark_onnx" and where.name == "__init__.py" and "site-packages" in where.parts
    assert where == here or installed, f"`import bark_onnx` found {where}, not {here} nor an installed copy"
