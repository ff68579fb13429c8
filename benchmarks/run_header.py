"""The first line of every GPU result (what ran, when, on which card, with which torch and Triton) and the report's
last step (print it, write it to ``--out``)."""
from __future__ import annotations

import datetime
from pathlib import Path

import torch


def run_header(title: str, device: torch.device, extra: str = "") -> str:
    """``"<title>, <UTC date time> UTC, <card or CPU>, torch <v>, triton <v or absent><extra>"`` (one line)."""
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    try:
        import triton

        tver = triton.__version__
    except ImportError:
        tver = "absent"
    return (f"{title}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {card}, "
            f"torch {torch.__version__}, triton {tver}{extra}")


def emit_report(lines: list[str], out: str | None) -> None:
    """Print the report (after a blank line) and, when ``out`` is given, write it there (parent folders made)."""
    text = "\n".join(lines)
    print()
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
