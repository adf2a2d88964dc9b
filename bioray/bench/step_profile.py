"""Where a training step's time goes: torch.profiler over a few steps, op self-time by kind.

Self time (an op's time less its children's) adds up to the profiled time without counting any
nesting twice. An op is put in a kind by its own name (aten::mm is GEMM wherever it runs), else by
its nearest named ancestor (the aten::empty inside aten::linear is the linear's); everything under
the optimizer's step is the optimizer's. CPU only: on CUDA the host's self time is launch time.
"""

from __future__ import annotations

import time

KINDS = ("gemm", "attention", "layer_norm", "activation", "dropout", "embedding", "loss", "optimizer", "other")
# Substrings of a normalised op name (lower case, no underscores, no "aten::"), checked in this order:
# log_softmax is the loss's before softmax is attention's.
PATTERNS = (("loss", ("crossentropy", "nllloss", "logsoftmax")),
            ("attention", ("scaleddotproduct", "flashattention", "softmax")),
            ("layer_norm", ("layernorm",)),
            ("activation", ("gelu",)),
            ("dropout", ("dropout", "bernoulli")),
            ("embedding", ("embedding",)))
GEMM_PREFIXES = ("addmm", "mm", "bmm", "baddbmm", "matmul", "linear")


def _normalised(name: str) -> str:
    """'autograd::engine::evaluate_function: AddmmBackward0' -> 'addmmbackward0'; 'aten::_softmax' -> 'softmax'."""
    return name.rsplit(": ", 1)[-1].removeprefix("aten::").lower().replace("_", "")


def kind_of_name(name: str) -> str | None:
    """The kind an op's own name says, or None for a generic op (copy, add, empty, ...)."""
    if name.startswith("Optimizer."):
        return "optimizer"
    plain = _normalised(name)
    for kind, parts in PATTERNS:
        if any(part in plain for part in parts):
            return kind
    return "gemm" if plain.startswith(GEMM_PREFIXES) else None


def kind_of(event) -> str:
    """An event's kind: the optimizer's if under its step, else its own name's, else its nearest ancestor's."""
    chain, node = [], event
    while node is not None:
        chain.append(kind_of_name(node.name))
        node = node.cpu_parent
    if "optimizer" in chain:
        return "optimizer"
    return next((kind for kind in chain if kind is not None), "other")


def group_self_times(events) -> dict[str, float]:
    """Seconds of op self-time per kind, every kind present (zero where none ran)."""
    seconds = dict.fromkeys(KINDS, 0.0)
    for event in events:
        seconds[kind_of(event)] += event.self_cpu_time_total / 1e6
    return seconds


def profile_steps(step, batches: list[dict], steps: int = 2) -> dict:
    """Profile `steps` calls of step (after the caller's warmup) and group their op self-time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        wall = time.perf_counter() - started
    seconds = group_self_times(prof.events())
    total = sum(seconds.values())
    return {"steps": steps, "wall_seconds": wall, "op_seconds": total,
            "kinds": {kind: {"seconds": s, "fraction": s / total if total else 0.0} for kind, s in seconds.items()}}


def render_breakdown(breakdown: dict) -> list[str]:
    """One line per kind, largest first."""
    rows = sorted(breakdown["kinds"].items(), key=lambda item: -item[1]["seconds"])
    lines = [f"  where bioray's step goes ({breakdown['steps']} profiled steps, {breakdown['wall_seconds']:.2f} s; "
             f"op self-time {breakdown['op_seconds']:.2f} s):"]
    lines += [f"    {kind:11s} {row['seconds']:8.3f} s {row['fraction']:6.1%}" for kind, row in rows]
    if breakdown.get("gemm_flops_per_s"):
        lines.append(f"  the step's GEMMs ran at {breakdown['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s")
    return lines
