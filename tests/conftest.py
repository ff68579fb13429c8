"""Shared test set-up: Triton runs in its CPU interpreter when no GPU is present; fixtures from the authors' code."""
from __future__ import annotations

import os
from pathlib import Path

# Must happen before anything imports triton: without a GPU, Triton kernels run in the interpreter.
if os.environ.get("ZOO_TEST_DEVICE", "") != "cuda":
    try:
        import torch

        _has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        _has_cuda = False
    if not _has_cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Fixtures made by running the authors' code: $ZOO_REFERENCE_DIR, else ../shared/reference beside the checkout (CI
# and the team's machines have it), else the few copies that ship in tests/fixtures/reference for a user's clone.
_REPO = Path(__file__).resolve().parents[1]
_REFERENCE_CANDIDATES = [_REPO.parent / "shared" / "reference", _REPO / "tests" / "fixtures" / "reference"]
REFERENCE_ROOT = Path(
    os.environ.get("ZOO_REFERENCE_DIR") or next((p for p in _REFERENCE_CANDIDATES if p.is_dir()), _REFERENCE_CANDIDATES[-1])
)


@pytest.fixture(scope="session")
def reference_root() -> Path:
    """Folder of numerical fixtures made with the authors' code (tests/fixtures/reference or $ZOO_REFERENCE_DIR)."""
    if not REFERENCE_ROOT.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE_ROOT} (set ZOO_REFERENCE_DIR)")
    return REFERENCE_ROOT


def _reference_roots() -> list[Path]:
    env = os.environ.get("ZOO_REFERENCE_DIR")
    return [Path(env)] if env else list(_REFERENCE_CANDIDATES)


@pytest.fixture(scope="session")
def reference_model():
    """``reference_model(name)`` -> the first fixture folder holding ``name`` ($ZOO_REFERENCE_DIR, else
    ../shared/reference, else tests/fixtures/reference); skips the test when none does (a user's clone has only
    the few copies in tests/fixtures)."""

    def find(name: str) -> Path:
        for root in _reference_roots():
            if (root / name).is_dir():
                return root / name
        pytest.skip(f"reference fixture {name!r} not found under {[str(r) for r in _reference_roots()]} "
                    "(set ZOO_REFERENCE_DIR)")

    return find


@pytest.fixture
def reference_dir(request, reference_root) -> Path:
    """``reference_dir`` for a model: use ``@pytest.mark.parametrize('reference_dir', ['repnext'], indirect=True)``
    or call ``reference_root / name`` directly."""
    name = getattr(request, "param", None)
    path = reference_root / name if name else reference_root
    if not path.is_dir():
        pytest.skip(f"reference fixture folder {path} is missing")
    return path


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


HUB_DIR = Path(__file__).resolve().parents[1] / "hub" / "zoo-models"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """``offline_hub(name)``: put the repo's published folder ``hub/zoo-models/<name>`` into an empty HF cache as
    ``zoo-models/<name>``, then switch the hub offline; returns the folder. Skips when the folder was never built."""
    def install(name: str) -> Path:
        from zoo import hub

        folder = HUB_DIR / name
        if not (folder / "model.safetensors").is_file():
            pytest.skip(f"{folder} not built (see its scripts/gpu/ recipe)")
        cache = tmp_path / "hf" / "hub"
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
        hub.cache_folder(folder, f"zoo-models/{name}", cache_dir=cache)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return folder

    return install


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """Empty HF cache in tmp_path, online settings, and every outgoing connection refused; returns the list of
    attempted addresses (so tests can count them)."""
    import socket

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    return attempts
