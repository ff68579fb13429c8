"""``python -m zoo crane-convert``: the authors' released Crane / Crane+ prompt checkpoints -> zoo hub folders.

    python -m zoo.crane_cli --released path/to/checkpoints --out hub/zoo-models

``--released`` holds the upstream ``trained_on_{mvtec,visa}_{crane,cranep}/epoch_5.pth`` folders. Each becomes
``<out>/{crane,cranep}_vit_l14_336.{mvtec,visa}`` (config.json, model.safetensors with the prompt learner only,
README.md naming the CLIP / DINOv2 weights it needs and the paper's numbers).
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["convert_released", "export_pte", "add_parser", "main"]

_FOLDERS = {("crane", "mvtec"): "trained_on_mvtec_crane", ("crane", "visa"): "trained_on_visa_crane",
            ("cranep", "mvtec"): "trained_on_mvtec_cranep", ("cranep", "visa"): "trained_on_visa_cranep"}


def _card(arch: str, tag: str, sha: str) -> str:
    test_on = "VisA" if tag == "mvtec" else "MVTec-AD"
    plus = arch.startswith("cranep")
    lines = [
        f"Converted from the authors' `checkpoints/{_FOLDERS[(arch.split('_')[0], tag)]}/epoch_5.pth` "
        f"(AlirezaSalehy/Crane @ 39181f9, MIT; sha256 `{sha}`).",
        "",
        "This folder holds the **learned prompts only** (43,008 values). The frozen backbones are fetched when the "
        "model is built (`clip_weights` / `dino_weights` in config.json):",
        "- CLIP ViT-L/14@336px: `openai/clip-vit-large-patch14-336` (transformers layout; open_clip `ViT-L-14-336` "
        "/ `openai` and timm `vit_large_patch14_clip_336.openai` load too)",
    ]
    if plus:
        lines.append("- DINOv2-B/14 with registers: `timm/vit_base_patch14_reg4_dinov2.lvd142m`")
        lines.append("")
        lines.append("Note: the upstream `epoch_5.pth` of Crane+ was saved as `epoch_12` (12 epochs of training).")
        lines.append("D-Attn thresholds with the mean over the whole batch, so a map depends on its batch.")
    lines += ["", f"Trained on {tag.upper() if tag == 'visa' else 'MVTec-AD'} (test split with masks), tested "
              f"zero-shot on {test_on}. Paper Table 1 on {test_on} (image AUROC / AP / F1-max; pixel AUROC / AUPRO / "
              "F1-max):"]
    table = {("crane", "mvtec"): "85.3, 87.9, 82.6 | 95.1, 87.5, 30.9",
             ("crane", "visa"): "93.8, 97.5, 93.8 | 91.3, 84.6, 41.3",
             ("cranep", "mvtec"): "83.6, 86.7, 81.2 | 95.3, 90.6, 30.2",
             ("cranep", "visa"): "93.9, 97.6, 93.6 | 91.2, 88.1, 43.8"}[(arch.split("_")[0], tag)]
    lines += ["", table, "", "Not re-measured here (the OpenAI weights are not available offline)."]
    return "\n".join(lines)


def convert_released(released: str | Path, out: str | Path) -> list[Path]:
    """Write the four hub folders; returns their paths."""
    import torch

    import zoo
    from zoo.hub import save_pretrained, sha256_file
    from zoo.models.crane import convert_checkpoint

    released, out = Path(released), Path(out)
    written = []
    for (variant, tag), folder in _FOLDERS.items():
        src = released / folder / "epoch_5.pth"
        if not src.is_file():
            raise FileNotFoundError(src)
        arch = f"{variant}_vit_l14_336"
        with torch.device("meta"):
            model = zoo.create_model(arch)  # shapes only: the backbones are not part of the folder
        model.prompt_learner.to_empty(device="cpu")
        model.prompt_learner.load_state_dict(
            {k.removeprefix("prompt_learner."): v for k, v in convert_checkpoint(src).items()}, strict=True)
        model.zoo_config = {"architecture": arch, "args": {}}
        dest = out / f"{arch}.{tag}"
        save_pretrained(model, dest, dataset=tag, extra_card=_card(arch, tag, sha256_file(src)),
                        metrics=dict(zoo.registry.model_entry(arch).pretrained[tag].metrics))
        written.append(dest)
    return written


def export_pte(model, example, path: str | Path) -> dict:
    """ExecuTorch ``.pte`` of ``model.for_export()`` with XNNPACK in per-op mode (the default grouping finds a
    dependency cycle in Crane's dual-path graph), run back through the ExecuTorch runtime: returns
    ``{"path", "max_abs_diff", "file_size"}``."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from zoo.export import _flatc_env, _run_pte

    view = model.for_export()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        ref = view(example)
    ep = torch.export.export(view, (example,))
    with _flatc_env():
        prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner(per_op_mode=True)]).to_executorch()
    path.write_bytes(prog.buffer)
    got = _run_pte(path, (example,))
    diff = max(float((a - b).abs().max()) for a, b in zip(got, ref))
    return {"path": str(path), "max_abs_diff": diff, "file_size": path.stat().st_size}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``crane-convert`` on a ``zoo`` CLI subparsers object."""
    p = subparsers.add_parser("crane-convert", help="released Crane prompt checkpoints -> zoo hub folders")
    p.add_argument("--released", required=True, help="folder holding trained_on_{mvtec,visa}_{crane,cranep}/")
    p.add_argument("--out", default="hub/zoo-models")
    p.set_defaults(func=lambda a: [print(p_) for p_ in convert_released(a.released, a.out)])
    return p


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zoo.crane_cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = parser.parse_args(["crane-convert", *argv] if argv is not None else None)
    args.func(args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
