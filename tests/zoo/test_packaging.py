"""The distribution has one import root, ``zoo``, and the checkout root holds no package another distribution imports.

``zoo/kernels`` once sat at the root as ``kernels/``: with transformers >= 5.2x (which imports Hugging Face's
``kernels``), ``python train.py`` or pytest from the root imported ours instead and VideoNSA failed to load."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE", "zoo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="the `build` package (test extra) is needed")
    # Build from a copy so the checkout gets no build/ or egg-info and parallel builds cannot collide.
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.pte", "*.pt2")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.is_file():
            shutil.copy2(p, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = list(out.glob("zoo-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_has_a_single_import_root(wheel):
    top = {n.split("/", 1)[0] for n in _names(wheel)}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("zoo-")
    assert top - dist_info == {"zoo"}, f"unexpected top-level names: {sorted(top - dist_info - {'zoo'})}"


def test_wheel_holds_every_module_and_the_shipped_data(wheel):
    names = set(_names(wheel))
    here = {p.relative_to(ROOT).as_posix() for p in (ROOT / "zoo").rglob("*.py") if "__pycache__" not in p.parts}
    assert here <= names, f"modules missing from the wheel: {sorted(here - names)[:10]}"
    for data in ("zoo/datasets/data/lina_offline/tokens.npz", "zoo/datasets/data/fashion_mnist_subset"):
        assert any(n.startswith(data) for n in names), f"{data} missing from the wheel"


def test_checkout_root_shadows_no_other_distribution():
    """A package folder at the root is importable whenever the root is on sys.path (``python train.py``)."""
    import importlib.metadata as md

    taken = {name for name in md.packages_distributions() if name != "zoo"}
    taken |= {"kernels", "datasets", "models", "transformers", "tokenizers"}
    at_root = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert not at_root & taken, f"root folders shadow other packages: {sorted(at_root & taken)}"


def test_installed_wheel_imports_outside_the_checkout(wheel, tmp_path):
    """Unpacked into a fresh folder (what pip install does), `zoo` resolves there, not to the checkout."""
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    code = ("import zoo, zoo.registry, zoo.hub, zoo.commands; import zoo.kernels, zoo.datasets; "
            "print(zoo.__file__); print(len(zoo.__path__))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    file, npath = proc.stdout.split()
    assert Path(file).is_relative_to(target) and npath == "1"
