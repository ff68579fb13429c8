"""The distribution has one import root, ``zoo``: models/, kernels/, datasets/ install as zoo.models, zoo.kernels,
zoo.datasets (a top-level ``datasets`` would shadow Hugging Face's)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE", "zoo", "models",
           "kernels", "datasets")


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


def test_wheel_maps_source_folders_under_zoo(wheel):
    names = set(_names(wheel))
    for pkg in ("zoo/__init__.py", "zoo/registry.py", "zoo/hub.py", "zoo/export.py", "zoo/__main__.py",
                "zoo/models/__init__.py", "zoo/kernels/__init__.py", "zoo/datasets/__init__.py"):
        assert pkg in names, f"{pkg} missing from the wheel"
    for folder in ("models", "kernels", "datasets"):
        here = {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*.py")
                if "__pycache__" not in p.parts}
        inside = {n[len(f"zoo/{folder}/"):] for n in names if n.startswith(f"zoo/{folder}/") and n.endswith(".py")}
        assert here <= inside, f"{folder}/ modules missing from the wheel: {sorted(here - inside)}"


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
