"""Step timing, real-token throughput and ETA for the progress line."""

from __future__ import annotations

import time


class Throughput:
    """Tokens/s and sequences/s over the last logging window, plus an ETA for the whole run."""

    def __init__(self, total_steps: int, start_step: int = 0):
        self.total_steps = total_steps
        self.started = self.window_start = time.perf_counter()
        self.start_step = start_step
        self.tokens = self.sequences = 0

    def add(self, tokens: int, sequences: int) -> None:
        self.tokens += tokens
        self.sequences += sequences

    def window(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        done = max(step - self.start_step, 1)
        eta = (now - self.started) / done * (self.total_steps - step)
        rates = {"tokens_per_s": self.tokens / elapsed, "sequences_per_s": self.sequences / elapsed, "eta_s": eta}
        self.window_start, self.tokens, self.sequences = now, 0, 0
        return rates


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
