"""Export a model for deployment: ``torch.export`` to ``.pt2`` or ExecuTorch (XNNPACK) to ``.pte``, checked for parity.

The model is put in eval mode and, by default, reparameterized first (timm's ``reparameterize_model`` convention:
children with ``fuse()`` are replaced by its result, ``reparameterize()`` / ``switch_to_deploy()`` run in place).
The exported file is loaded back and run on the example inputs; the report gives its max |difference| from eager.
"""
from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten

__all__ = ["ExportReport", "ExportParityError", "export", "reparameterize", "find_flatc"]

FORMATS = ("pt2", "pte")


class ExportParityError(RuntimeError):
    """The exported program's outputs differ from eager by more than ``atol``."""


@dataclass
class ExportReport:
    """Outcome of ``export``: where the file went and how close it runs to eager PyTorch (fp32 abs differences)."""

    path: Path
    format: str
    max_abs_diff: float
    atol: float
    reparameterized: bool
    reparam_max_abs_diff: float
    num_params: int
    num_params_exported: int
    file_size: int
    export_seconds: float
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol

    def __str__(self) -> str:
        return (
            f"{self.format} -> {self.path} ({self.file_size / 1e6:.2f} MB, {self.export_seconds:.1f}s): max|diff| vs "
            f"eager {self.max_abs_diff:.3g} (atol {self.atol:g}, {'ok' if self.ok else 'FAILED'}); reparameterized="
            f"{self.reparameterized} (params {self.num_params / 1e6:.3f}M -> {self.num_params_exported / 1e6:.3f}M, "
            f"fuse diff {self.reparam_max_abs_diff:.3g}); outputs {self.output_shapes}"
        )


def reparameterize(model: nn.Module) -> nn.Module:
    """A fused copy of ``model`` for inference (``model`` itself is untouched).

    If the model itself defines ``fuse()`` / ``reparameterize()`` that is used (it knows its own structure);
    otherwise ``timm.utils.reparameterize_model`` walks the children (``fuse()`` replaces, ``reparameterize()`` and
    ``switch_to_deploy()`` act in place).
    """
    model = copy.deepcopy(model).eval()
    for name in ("fuse", "reparameterize", "switch_to_deploy"):
        fn = getattr(model, name, None)
        if callable(fn):
            out = fn()
            return (out if isinstance(out, nn.Module) else model).eval()
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model, inplace=True).eval()


_reparameterize = reparameterize  # export() has an argument of the same name


def _tensors(out: Any, what: str) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(out)
    ts = [x for x in leaves if isinstance(x, torch.Tensor)]
    if not ts:
        raise TypeError(f"{what} returned no tensors (got {type(out).__name__})")
    return ts


def _max_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], what: str) -> float:
    if len(a) != len(b):
        raise ExportParityError(f"{what}: {len(a)} output tensors vs {len(b)} from eager")
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, b)):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if tuple(x.shape) != tuple(y.shape):
            raise ExportParityError(f"{what}: output {i} has shape {tuple(x.shape)}, eager {tuple(y.shape)}")
        if x.numel():
            d = (x.detach().double() - y.detach().double()).abs()
            worst = max(worst, float(torch.nan_to_num(d, nan=float("inf")).max()))
    return worst


def find_flatc() -> str | None:
    """Path of a ``flatc`` that ExecuTorch can use: ``$FLATC_EXECUTABLE``, ``flatc`` on PATH, or the one the
    executorch wheel installs next to the Python executable; None when there is none."""
    env = os.environ.get("FLATC_EXECUTABLE")
    if env and shutil.which(env):
        return shutil.which(env)
    on_path = shutil.which("flatc")
    if on_path:
        return on_path
    beside = Path(sys.executable).parent / "flatc"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


@contextmanager
def _flatc_env() -> Iterator[None]:
    flatc = find_flatc()
    if flatc is None:
        raise RuntimeError(
            "ExecuTorch's to_executorch() needs the FlatBuffers compiler `flatc`, which was not found: install the "
            "Debian/Ubuntu package flatbuffers-compiler (`apt-get install flatbuffers-compiler`) or point "
            "FLATC_EXECUTABLE at a flatc binary"
        )
    old = os.environ.get("FLATC_EXECUTABLE")
    os.environ["FLATC_EXECUTABLE"] = flatc
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FLATC_EXECUTABLE", None)
        else:
            os.environ["FLATC_EXECUTABLE"] = old


def _require_executorch() -> None:
    try:
        import executorch.exir  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "format='pte' needs ExecuTorch: install the zoo's `mobile` extra (pip install 'zoo[mobile]', i.e. "
            f"executorch==1.2.0) and the Debian package flatbuffers-compiler for `flatc` ({e})"
        ) from e


def _to_pte(ep: torch.export.ExportedProgram, path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _flatc_env():
        try:
            program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
        except AssertionError as e:  # graphs with parallel paths (Crane's dual path) can form partition cycles
            if "dependency cycles" not in str(e):
                raise
            program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner(per_op_mode=True)]).to_executorch()
    path.write_bytes(program.buffer)


def _run_pte(path: Path, inputs: tuple) -> list[torch.Tensor]:
    flat, _ = tree_flatten(inputs)
    try:
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(path)).load_method("forward")
        out = method.execute([x for x in flat])
    except ImportError:  # older runtimes: the pybindings loader
        from executorch.extension.pybindings.portable_lib import _load_for_executorch

        out = _load_for_executorch(str(path)).forward(tuple(flat))
    return [torch.as_tensor(o) for o in out if isinstance(o, torch.Tensor)]


def export(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple,
    path: str | Path,
    format: str = "pt2",
    *,
    reparameterize: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    dynamic_shapes: Any = None,
) -> ExportReport:
    """Export ``model`` to ``path`` and check the exported program against eager PyTorch.

    Args:
        model: any ``nn.Module``; not modified (a copy is fused). Outputs may be a tensor or nested tuples/dicts of
            tensors (compared leaf by leaf).
        example_inputs: a tensor or a tuple of positional inputs, e.g. ``torch.randn(1, 3, 224, 224)``.
        path: output file (``.pt2`` or ``.pte``; parent folders are created).
        format: ``"pt2"`` (``torch.export.save``) or ``"pte"`` (ExecuTorch with the XNNPACK delegate; needs the
            ``mobile`` extra and ``flatc``).
        reparameterize: fuse first (see ``zoo.export.reparameterize``).
        check: raise ``ExportParityError`` when the reloaded program's outputs differ from the eager (unfused)
            model's by more than ``atol``; with ``check=False`` the difference is only reported.
        dynamic_shapes: passed to ``torch.export.export``.
    Returns:
        ``ExportReport`` with ``max_abs_diff`` (exported vs eager original) and ``reparam_max_abs_diff`` (fused vs
        original eager).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in tree_flatten(inputs)[0]):
        raise TypeError("example_inputs must be a tensor or a non-empty tuple of tensors")
    if format == "pte":
        _require_executorch()
        with _flatc_env():  # fail fast, before the (slow) export, when flatc is missing
            pass
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = _tensors(model(*inputs), "model")
            target = _reparameterize(model) if reparameterize else model
            fused = _tensors(target(*inputs), "reparameterized model")
        reparam_diff = _max_diff(fused, ref, "reparameterized model") if reparameterize else 0.0
        ep = torch.export.export(target, inputs, dynamic_shapes=dynamic_shapes)
        if format == "pt2":
            torch.export.save(ep, str(path))
            with torch.no_grad():
                got = _tensors(torch.export.load(str(path)).module()(*inputs), "exported program")
        else:
            _to_pte(ep, path)
            got = _run_pte(path, inputs)
    finally:
        model.train(was_training)
    diff = _max_diff(got, ref, f"exported {format}")
    report = ExportReport(
        path=path,
        format=format,
        max_abs_diff=diff,
        atol=float(atol),
        reparameterized=bool(reparameterize),
        reparam_max_abs_diff=reparam_diff,
        num_params=sum(p.numel() for p in model.parameters()),
        num_params_exported=sum(p.numel() for p in target.parameters()),
        file_size=path.stat().st_size,
        export_seconds=time.perf_counter() - t0,
        output_shapes=[tuple(t.shape) for t in ref],
    )
    if check and not report.ok:
        raise ExportParityError(f"exported {format} differs from eager by {diff:.3g} > atol {atol:g}: {report}")
    return report
