"""The machine's own matrix-multiply peak, at the GEMM shapes a BERT training step runs.

A CPU has no data-sheet peak worth dividing by (clocks, cores shared with other work, MKL's
kernels), so `bench pretrain` measures one: every linear layer of the model, at the step's token
count, timed as the step runs it (the forward product and the two backward ones), in this process
with torch's current thread count, best of a few repeats. The peak is the FLOP-weighted rate of
that mix, i.e. the fastest this machine could run the step's GEMMs back to back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bioray.config import ModelConfig


@dataclass(frozen=True)
class Gemm:
    """A linear layer over `rows` tokens (inputs -> outputs features), `count` of them per step."""

    rows: int
    inputs: int
    outputs: int
    count: int

    @property
    def flops(self) -> float:
        """Forward plus the two backward products (input and weight gradients), each 2·m·k·n."""
        return 3 * 2.0 * self.rows * self.inputs * self.outputs


def model_gemms(shape: ModelConfig, tokens: int, masked: int, vocab_rows: int) -> list[Gemm]:
    """The linear layers of a masked-LM step: per encoder layer Q, K, V and the attention output
    (hidden x hidden) and the feed-forward pair, over every token; the MLM head's transform and the
    tied decoder over the masked tokens only (bioray's masked-only decoder)."""
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    return [Gemm(tokens, h, h, 4 * layers), Gemm(tokens, h, i, layers), Gemm(tokens, i, h, layers),
            Gemm(masked, h, h, 1), Gemm(masked, h, vocab_rows, 1)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_gemm(gemm: Gemm, repeats: int, device: torch.device, dtype: torch.dtype) -> float:
    """Best seconds of one forward + backward of the layer's products, over `repeats` after a warmup.
    The operands are laid out as autograd lays them out (weight as (outputs, inputs))."""
    x = torch.randn(gemm.rows, gemm.inputs, device=device, dtype=dtype)
    weight = torch.randn(gemm.outputs, gemm.inputs, device=device, dtype=dtype)
    bias = torch.randn(gemm.outputs, device=device, dtype=dtype)
    grad = torch.randn(gemm.rows, gemm.outputs, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warmup (allocation, MKL's first call)
        _sync(device)
        started = time.perf_counter()
        torch.nn.functional.linear(x, weight, bias)  # forward: (m, k) x (k, n)
        grad @ weight  # input gradient: (m, n) x (n, k)
        grad.t() @ x  # weight gradient: (n, m) x (m, k)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def measure_peak(gemms: list[Gemm], repeats: int = 5, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> dict:
    """FLOP/s of the step's GEMM mix (each shape's best time, weighted by how often the step runs it)
    and of each shape alone."""
    device = torch.device(device)
    seconds = [time_gemm(g, repeats, device, dtype) for g in gemms]
    total_flops = sum(g.count * g.flops for g in gemms)
    total_seconds = sum(g.count * s for g, s in zip(gemms, seconds))
    return {"flops_per_s": total_flops / total_seconds, "threads": torch.get_num_threads(), "repeats": repeats,
            "dtype": str(dtype).removeprefix("torch."),
            "shapes": [{"rows": g.rows, "inputs": g.inputs, "outputs": g.outputs, "count": g.count,
                        "flops_per_s": g.flops / s} for g, s in zip(gemms, seconds)]}


def best_peak(*measurements: dict) -> dict:
    """The fastest of several measurements of the same mix (this machine's speed drifts with other work)."""
    return max(measurements, key=lambda m: m["flops_per_s"])


def step_gemm_flops(gemms: list[Gemm]) -> float:
    """The FLOPs of one step's linear layers (forward and backward)."""
    return sum(g.count * g.flops for g in gemms)
