"""benchmarks/sparse_accuracy.py: the CPU smoke run passes for nsa / moc_attention / gla, and the check can fail."""
import importlib.util
import sys
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "sparse_accuracy.py"


def _load():
    spec = importlib.util.spec_from_file_location("sparse_accuracy_script", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_cpu_quick_run_passes(tmp_path):
    mod = _load()
    out = tmp_path / "acc.md"
    assert mod.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| case")]
    assert rows and all(ln.split("|")[-3].strip() == "yes" for ln in rows), text
    for op in ("nsa ", "moc_attention ", "gla "):
        assert any(ln.startswith(f"| {op}") for ln in rows), f"{op} missing from\n{text}"
    assert "all cases pass: yes" in text


def test_check_detects_a_perturbed_output():
    mod = _load()
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(64, 32, generator=g, dtype=torch.float64)
    low = ref.to(torch.float16)
    base = mod.errors([low], [ref], ["o"], torch.float16)
    assert mod.check_row(base, base)[1]  # the baseline itself passes
    bad = low.clone()
    bad[3, 5] += 0.05  # one wrong element, ~50 fp16 steps
    worst, ok = mod.check_row(mod.errors([bad], [ref], ["o"], torch.float16), base)
    assert not ok and worst > 1
