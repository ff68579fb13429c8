"""The documented commands run: every embedded-default config (``configs/<model>/*_cpu.yaml``) trains, tests and
writes a hub folder through ``train.py`` / ``eval.py`` in a short mode (same code path, a few batches), and
``scripts/demo.sh`` points eval at the folder train writes. CI also runs ``ZOO_DEMO_SHORT=1 bash scripts/demo.sh``."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EMBEDDED_CONFIGS = sorted(REPO.glob("configs/*/*_cpu.yaml"))
SHORT_TRAIN = [
    "--trainer.max_epochs", "1", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.val_check_interval", "1",
]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("TRITON_INTERPRET", None)  # conftest's interpreter switch is for kernel tests; users run without it
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def test_every_model_has_an_embedded_default_config():
    models_with_configs = {p.parent.name for p in REPO.glob("configs/*/*.yaml")}
    with_cpu_default = {p.parent.name for p in EMBEDDED_CONFIGS}
    assert models_with_configs == with_cpu_default, f"configs without a *_cpu.yaml default: {models_with_configs - with_cpu_default}"


@pytest.mark.parametrize("config", EMBEDDED_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_embedded_default_config_trains_evaluates_and_writes_a_card(config: Path, tmp_path: Path):
    run = tmp_path / "run"
    _run([sys.executable, "train.py", "--config", str(config), "--trainer.default_root_dir", str(run), *SHORT_TRAIN], 600)
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] >= 1, results
    with_test = yaml.safe_load(config.read_text()).get("test_after_fit", True)
    assert results.get("test") or not with_test, results
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    hub = tmp_path / "hub"
    _run([sys.executable, "eval.py", "--config", str(config), "--ckpt", str(last), "--card-out", str(hub),
          "--limit-batches", "1", "--out", str(tmp_path / "metrics.json")], 600)
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (hub / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "metrics.json").read_text())


def test_demo_script_evaluates_the_folder_its_config_trains_into():
    """demo.sh names the run folder once and passes it to train (default_root_dir), eval (--ckpt) and the card."""
    text = (REPO / "scripts" / "demo.sh").read_text()
    config = re.search(r"^CONFIG=(\S+)", text, re.M).group(1)
    assert (REPO / config).is_file(), config
    assert '--trainer.default_root_dir "$RUN"' in text
    assert '--ckpt "$RUN/checkpoints/last.ckpt"' in text and '--card-out "$RUN/hub"' in text
    assert yaml.safe_load((REPO / config).read_text())["trainer"]["accelerator"] == "cpu"
