"""benchmarks/gla.py, benchmarks/sparse.py and benchmarks/profile_table.py: CPU smoke runs (tiny shapes) write every
row, honour --rows, and --profile prints a kernel table naming our ops."""
import importlib.util
import sys
from pathlib import Path

import torch

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", _BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _rows(text, first_cell):
    return [ln for ln in text.splitlines() if ln.startswith(f"| {first_cell}")]


def test_gla_benchmark_cpu_with_profile(tmp_path, capsys):
    out = tmp_path / "gla.md"
    gla = _load("gla")
    gla.QUICK_CPU_ROWS = [(1, 40, 1, 16, 16)]  # one tiny shape: the kernels run in the Triton interpreter here
    gla.main(["--device", "cpu", "--quick", "--profile", "--out", str(out)])
    rows = _rows(out.read_text(), "B1 ")
    assert len(rows) == 2 and all(len(r.split("|")) == 9 for r in rows)  # fwd, fwd+bwd
    assert all(float(r.split("|")[3]) > 0 for r in rows)  # ours chunk timed
    err = capsys.readouterr().err
    assert "profile, ours chunk fwd+bwd" in err and "zoo::gla" in err


def test_sparse_benchmark_cpu_rows_filter(tmp_path, capsys):
    out = tmp_path / "sparse.md"
    _load("sparse").main(["--device", "cpu", "--quick", "--rows", "N2048|T512", "--profile", "--breakdown",
                          "--out", str(out)])
    text = out.read_text()
    nsa_rows = [[c.strip() for c in r.split("|")[1:-1]] for r in _rows(text, "nsa T512")]
    assert len(_rows(text, "moc N2048")) == 1 and len(nsa_rows[0]) == 7  # one timing row, then the breakdown
    assert "profile, ours fwd+bwd, nsa T512" in capsys.readouterr().err
    # --breakdown: one row per stage of nsa's forward (the stages nsa itself runs), their sum and end to end
    from zoo.kernels.nsa.op import STAGES
    stages = {r[1]: r for r in nsa_rows[1:]}
    assert list(stages) == [*STAGES, "sum of stages", "end to end (wall)"]
    assert all(float(r[2]) >= 0 for r in stages.values()) and float(stages["sum of stages"][2]) > 0
    _load("sparse").main(["--device", "cpu", "--quick", "--only", "nsa", "--rows", "T99", "--out", str(out)])
    assert not _rows(out.read_text(), "nsa T")  # no size matches: the table has no rows


def test_sparse_benchmark_pack_heads_flag(tmp_path, monkeypatch):
    """--no-pack-gqa-heads turns the engine's head packing (on by default) off for the run and says so in the
    header."""
    from zoo.kernels.attention import triton_common
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", True)  # restored after the test
    out = tmp_path / "sparse.md"
    _load("sparse").main(["--device", "cpu", "--quick", "--only", "nsa", "--rows", "T99", "--out", str(out)])
    assert "head packing" not in out.read_text() and triton_common.PACK_GQA_HEADS
    _load("sparse").main(["--device", "cpu", "--quick", "--only", "nsa", "--rows", "T99", "--no-pack-gqa-heads",
                          "--out", str(out)])
    assert "GQA head packing off" in out.read_text().splitlines()[0] and not triton_common.PACK_GQA_HEADS


def test_kernel_table_lists_the_ops_of_the_call():
    profile_table = _load("profile_table")
    x = torch.randn(64, 64)
    table = profile_table.kernel_table(lambda: x @ x, "cpu", steps=2, rows=5)
    assert table.startswith("(2 steps)") and "aten::mm" in table


def test_run_header_names_card_and_versions():
    header = _load("run_header").run_header("title", torch.device("cpu"), ", --quick")
    assert header.startswith("title, ") and " UTC, CPU, torch " in header and ", triton " in header
    assert header.endswith(", --quick")


def test_emit_report_prints_and_writes(tmp_path, capsys):
    out = tmp_path / "sub" / "report.md"
    _load("run_header").emit_report(["# title", "| a |"], str(out))
    assert out.read_text() == "# title\n| a |\n" and "| a |" in capsys.readouterr().out
    _load("run_header").emit_report(["x"], None)  # no file: print only
    assert capsys.readouterr().out.strip() == "x"
