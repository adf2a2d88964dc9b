"""Peak memory of this process tree, as the benches report it."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import psutil


class PeakMemory:
    """Largest summed PSS of this process tree while the context is open.

    PSS, not RSS: Ray's workers map the same shared object-store pages, and summing their RSS
    would count those pages once per worker.
    """

    def __init__(self, interval: float = 0.5):
        self.peak = 0
        self.driver_peak = 0  # this process alone (the Ray driver)
        self.at_peak: dict[str, int] = {}  # PSS by process kind ("driver", "raylet", "ray::IDLE", ...) at the peak
        self.kind_peaks: dict[str, int] = {}  # each kind's own largest summed PSS, whenever it came
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            by_kind: dict[str, int] = {}
            for process in [me, *me.children(recursive=True)]:
                try:
                    pss = process.memory_full_info().pss
                    kind = "driver" if process is me else _kind(process)
                except psutil.Error:
                    continue
                by_kind[kind] = by_kind.get(kind, 0) + pss
                if process is me:
                    self.driver_peak = max(self.driver_peak, pss)
            for kind, pss in by_kind.items():
                self.kind_peaks[kind] = max(self.kind_peaks.get(kind, 0), pss)
            total = sum(by_kind.values())
            if total > self.peak:
                self.peak, self.at_peak = total, by_kind
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _kind(process: psutil.Process) -> str:
    """What a process is: Ray names its workers by what they run (`ray::IDLE`, `ray::TokenizePacker`)."""
    command = " ".join(process.cmdline())
    worker = re.match(r"ray::\w+", command)
    return worker.group(0) if worker else Path(command.split(" ")[0]).name or process.name()
