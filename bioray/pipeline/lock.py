"""A run lock in the workdir, so two scheduled runs never work on the same outputs at once.

The lock is a file created atomically (O_EXCL); its holder touches it every `heartbeat_s` while it
runs, so a lock left by a run that died (node lost, SIGKILL) is recognised as stale once it has not
been touched for `stale_after_s`, and taken over. The takeover itself is serialised through a second
O_EXCL file, so two runs that both find the same stale lock cannot both take it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another live run holds the lock; the message says who and since when."""


class RunLock:
    def __init__(self, path: Path, stale_after_s: float, heartbeat_s: float | None = None):
        self.path, self.stale_after_s = Path(path), stale_after_s
        self.heartbeat_s = heartbeat_s or max(1.0, min(60.0, stale_after_s / 4))
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock, or raise LockHeld. Returns a note when a stale lock was taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        note = None
        if not self._create():
            note = self._take_over_if_stale()
        self._thread = threading.Thread(target=self._beat, name="bioray-lock-heartbeat", daemon=True)
        self._thread.start()
        return note

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._holder().get("token") == self.token:  # never remove a lock that is no longer ours
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # --- internals ------------------------------------------------------------------------------

    def _create(self, path: Path | None = None) -> bool:
        path = path or self.path
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle)
        return True

    def _age(self, path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _take_over_if_stale(self) -> str:
        age = self._age(self.path)
        holder = self._holder()
        if age <= self.stale_after_s:
            raise LockHeld(f"{self.path} is held by pid {holder.get('pid')} on {holder.get('host')} since "
                           f"{holder.get('started')} (last heartbeat {age:.0f}s ago)")
        breaker = self.path.with_name(self.path.name + ".takeover")
        if self._age(breaker) > self.stale_after_s:  # a takeover that itself died
            breaker.unlink(missing_ok=True)
        if not self._create(breaker):
            raise LockHeld(f"{self.path}: another run is taking over the stale lock right now")
        try:
            if self._age(self.path) <= self.stale_after_s and self.path.exists():  # refreshed meanwhile
                raise LockHeld(f"{self.path} was refreshed by its holder while being taken over")
            self.path.unlink(missing_ok=True)
            if not self._create():
                raise LockHeld(f"{self.path}: taken by another run during the takeover")
        finally:
            breaker.unlink(missing_ok=True)
        note = (f"took over a stale lock {self.path} (pid {holder.get('pid')} on {holder.get('host')}, started "
                f"{holder.get('started')}, no heartbeat for {age:.0f}s > {self.stale_after_s:.0f}s)")
        log.warning(note)
        return note

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self._holder().get("token") != self.token:
                log.error("lost the run lock %s to another run (this run stalled longer than %.0fs)",
                          self.path, self.stale_after_s)
                return
            os.utime(self.path)
