"""Deterministic kernels (the training sections' `deterministic` key): torch's deterministic algorithms
and cuBLAS's fixed workspace, set in a training worker before its first CUDA operation. On CPU the
kernels bioray uses are deterministic already; on GPU, without this, cuBLAS and atomic-add kernels
(attention's backward, scatter) may sum in a different order from run to run."""

from __future__ import annotations

import os

import torch


def use_deterministic_kernels(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any GEMM
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
