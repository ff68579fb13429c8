"""The first line of every GPU result: what ran, when, on which card, with which torch and Triton."""
from __future__ import annotations

import datetime

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
