"""Peak memory of this process tree, as the benches report it."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """Largest summed PSS of this process tree while the context is open.

    PSS, not RSS: Ray's workers map the same shared object-store pages, and summing their RSS
    would count those pages once per worker.
    """

    def __init__(self, interval: float = 0.5):
        self.peak = 0
        self.driver_peak = 0  # this process alone (the Ray driver)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    pss = process.memory_full_info().pss
                except psutil.Error:
                    continue
                total += pss
                if process is me:
                    self.driver_peak = max(self.driver_peak, pss)
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
