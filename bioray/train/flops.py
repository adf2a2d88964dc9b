"""Model FLOPs utilisation: training FLOPs per real token against the device's peak."""

from __future__ import annotations

import torch

# Dense bf16 peak TFLOP/s by device name (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def flops_per_token(parameters: int, layers: int, hidden: int, seq_len: int) -> float:
    """6N for the dense forward+backward, plus 12·L·d·T for attention scores and values."""
    return 6.0 * parameters + 12.0 * layers * hidden * seq_len


def device_peak_flops() -> float | None:
    """Peak FLOP/s of this worker's GPU, or None on CPU or an unknown device."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None
