"""Export: fuse first, torch.export to .pt2 (and ExecuTorch .pte when installed), outputs checked against eager."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.export import ExportParityError, ExportReport, export, find_flatc, reparameterize
from zoo.registry import register_model


class ConvBN(nn.Module):
    """Conv without bias + BatchNorm; ``fuse()`` returns the equivalent single conv (timm convention)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, 3, padding=1)
        conv.weight.copy_(self.conv.weight * scale[:, None, None, None])
        conv.bias.copy_(self.bn.bias - self.bn.running_mean * scale)
        return conv


class TinyConvNet(nn.Module):
    """(B, 3, 16, 16) -> logits (B, num_classes), or a (logits, {"feat": ...}) pair with ``structured=True``."""

    def __init__(self, num_classes: int = 5, structured: bool = False):
        super().__init__()
        self.stem = ConvBN(3, 8)
        self.block = ConvBN(8, 8)
        self.head = nn.Linear(8, num_classes)
        self.structured = structured

    def forward(self, x):
        f = torch.relu(self.block(torch.relu(self.stem(x))))
        logits = self.head(f.mean((2, 3)))
        return (logits, {"feat": f}) if self.structured else logits


@register_model(paper="arXiv:0000.00003", task="image-classification", license="mit",
                input_spec={"shape": (3, 16, 16), "dtype": "float32"})
def zooexporttest_convnet(num_classes: int = 5, structured: bool = False) -> nn.Module:
    """Tiny conv net with fusable ConvBN children."""
    torch.manual_seed(0)
    m = TinyConvNet(num_classes=num_classes, structured=structured)
    with torch.no_grad():
        for bn in (m.stem.bn, m.block.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return m


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_reparameterize_fuses_children_and_keeps_outputs():
    m = zoo.create_model("zooexporttest_convnet").eval()
    fused = reparameterize(m)
    assert isinstance(fused.stem, nn.Conv2d) and isinstance(fused.block, nn.Conv2d)
    assert isinstance(m.stem, ConvBN), "the original model must not be modified"
    with torch.no_grad():
        assert torch.allclose(fused(X), m(X), atol=1e-5)


def test_pt2_export_reports_parity(tmp_path):
    m = zoo.create_model("zooexporttest_convnet").train()
    report = export(m, X, tmp_path / "sub" / "m.pt2")
    assert isinstance(report, ExportReport) and report.ok and report.format == "pt2"
    assert report.path.is_file() and report.file_size == report.path.stat().st_size > 0
    assert report.reparameterized and report.num_params_exported < report.num_params  # BN folded away
    assert 0.0 <= report.max_abs_diff < 1e-4 and report.reparam_max_abs_diff < 1e-4
    assert report.output_shapes == [(2, 5)]
    assert m.training, "export must restore the model's mode"
    ep = torch.export.load(str(report.path))
    with torch.no_grad():
        assert torch.allclose(ep.module()(X), m.eval()(X), atol=1e-4)
    assert "max|diff|" in str(report)


def test_pt2_export_of_structured_outputs_without_fusing(tmp_path):
    m = zoo.create_model("zooexporttest_convnet", structured=True)
    report = export(m, (X,), tmp_path / "s.pt2", reparameterize=False)
    assert report.output_shapes == [(2, 5), (2, 8, 16, 16)]
    assert not report.reparameterized and report.num_params_exported == report.num_params
    assert report.max_abs_diff < 1e-5


def test_parity_failure_raises_and_check_false_reports(tmp_path):
    class Drifting(nn.Module):
        def fuse(self):  # a wrong fusion: the check must catch it
            return Shifted()

        def forward(self, x):
            return x * 2

    class Shifted(nn.Module):
        def forward(self, x):
            return x * 2 + 0.01

    with pytest.raises(ExportParityError, match="differs from eager"):
        export(Drifting(), X, tmp_path / "d.pt2")
    report = export(Drifting(), X, tmp_path / "d.pt2", check=False)
    assert not report.ok and report.max_abs_diff == pytest.approx(0.01, abs=1e-6)


def test_bad_arguments(tmp_path):
    m = zoo.create_model("zooexporttest_convnet")
    with pytest.raises(ValueError, match="format"):
        export(m, X, tmp_path / "m.onnx", format="onnx")
    with pytest.raises(TypeError, match="example_inputs"):
        export(m, [1, 2], tmp_path / "m.pt2")
    with pytest.raises(TypeError, match="nn.Module"):
        export(lambda x: x, X, tmp_path / "m.pt2")


def test_missing_executorch_names_the_mobile_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # makes `import executorch...` fail
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    with pytest.raises(ImportError, match=r"mobile.*executorch==1\.2\.0"):
        export(zoo.create_model("zooexporttest_convnet"), X, tmp_path / "m.pte", format="pte")


_HAS_ET = importlib.util.find_spec("executorch") is not None


@pytest.mark.skipif(not _HAS_ET, reason="executorch (the `mobile` extra) is not installed")
def test_missing_flatc_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FLATC_EXECUTABLE", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_flatc() is None
    with pytest.raises(RuntimeError, match="flatbuffers-compiler"):
        export(zoo.create_model("zooexporttest_convnet"), X, tmp_path / "m.pte", format="pte")


@pytest.mark.skipif(not _HAS_ET, reason="executorch (the `mobile` extra) is not installed")
def test_pte_export_runs_in_the_executorch_runtime(tmp_path):
    if find_flatc() is None:
        pytest.skip("flatc not found (Debian package flatbuffers-compiler)")
    m = zoo.create_model("zooexporttest_convnet", structured=True)
    report = export(m, X, tmp_path / "m.pte", format="pte")
    assert report.path.read_bytes()[4:8] == b"ET12"  # ExecuTorch program flatbuffer identifier
    assert report.output_shapes == [(2, 5), (2, 8, 16, 16)]
    assert report.ok and report.max_abs_diff < 1e-4


def test_export_command(tmp_path, capsys):
    from zoo.commands import main

    out = tmp_path / "cli.pt2"
    rep = tmp_path / "report.json"
    assert main(["export", "zooexporttest_convnet", "--out", str(out), "--arg", "num_classes=3",
                 "--report", str(rep)]) == 0
    assert "max|diff|" in capsys.readouterr().out and out.is_file()
    d = json.loads(rep.read_text())
    assert d["format"] == "pt2" and d["output_shapes"] == [[1, 3]] and d["max_abs_diff"] < 1e-4
    assert main(["export", "zooexporttest_convnet", "--out", str(out), "--input-shape", "2,3,8,8"]) == 0
    assert "[(2, 5)]" in capsys.readouterr().out
    assert main(["export", "zooexporttest_convnet", "--out", str(out), "--input-shape", "a,b"]) == 2
    assert "--input-shape" in capsys.readouterr().err
