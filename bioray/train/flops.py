"""Model FLOPs utilisation: training FLOPs per real token against the device's peak."""

from __future__ import annotations

import torch

# Dense bf16 peak TFLOP/s by device name (vendor data sheets, no sparsity); the first match wins,
# so the PCIe/NVL H100s come before the SXM part.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0,
               "A10": 125.0}


def flops_per_token(parameters: int, layers: int, hidden: int, seq_len: int) -> float:
    """6N for the dense forward+backward, plus 12·L·d·T for attention scores and values."""
    return 6.0 * parameters + 12.0 * layers * hidden * seq_len


def mlm_parameters(model, mask_rate: float) -> float:
    """N of masked-LM training: the parameters a token is multiplied by. Every token passes the encoder
    layers; only the masked fraction needs the MLM head (transform + tied hidden x vocabulary decoder).
    Embedding lookups are no FLOPs. BERT-base at T=128: 6N + 12LdT = 0.55 GFLOP per token."""
    encoder = sum(p.numel() for p in model.bert.encoder.parameters())
    head = sum(p.numel() for p in model.cls.predictions.parameters())
    return encoder + mask_rate * head


def peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a device by its name, or None for an unknown one."""
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None


def device_peak_flops() -> float | None:
    """Peak FLOP/s of this worker's GPU, or None on CPU or an unknown device."""
    if not torch.cuda.is_available():
        return None
    return peak_flops(torch.cuda.get_device_name())
