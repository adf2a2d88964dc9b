"""The workdir run lock: one holder at a time, heartbeats keep it, a dead holder's lock goes stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bioray.pipeline.lock import LockHeld, RunLock


def test_second_holder_is_refused_while_the_first_holds_it(tmp_path):
    path = tmp_path / "run.lock"
    first = RunLock(path, stale_after_s=60)
    assert first.acquire() is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(LockHeld, match=rf"held by pid {os.getpid()}"):
        RunLock(path, stale_after_s=60).acquire()
    first.release()
    assert not path.exists()
    with RunLock(path, stale_after_s=60):  # free again
        assert path.exists()


def test_heartbeat_keeps_a_long_run_from_looking_stale(tmp_path):
    path = tmp_path / "run.lock"
    with RunLock(path, stale_after_s=1.0, heartbeat_s=0.1):
        time.sleep(2.0)  # twice the stale timeout: only the heartbeat keeps the lock fresh
        with pytest.raises(LockHeld):
            RunLock(path, stale_after_s=1.0).acquire()


def test_lock_of_a_killed_process_is_taken_over_once_stale(tmp_path):
    path = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bioray.pipeline.lock import RunLock\n"
        f"RunLock({str(path)!r}, stale_after_s=1.5, heartbeat_s=0.2).acquire(); print('held', flush=True); "
        f"time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            RunLock(path, stale_after_s=1.5).acquire()
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: no release
        holder.wait()
        time.sleep(2.0)
        taker = RunLock(path, stale_after_s=1.5)
        note = taker.acquire()
        assert note is not None and "stale" in note and str(holder.pid) in note
        assert json.loads(path.read_text())["token"] == taker.token
        taker.release()
        assert not path.exists()
    finally:
        holder.kill()


def test_a_run_never_removes_a_lock_it_lost(tmp_path):
    path = tmp_path / "run.lock"
    stalled = RunLock(path, stale_after_s=0.5, heartbeat_s=30)  # its heartbeat will not come in time
    stalled.acquire()
    old = time.time() - 10
    os.utime(path, (old, old))
    taker = RunLock(path, stale_after_s=0.5, heartbeat_s=0.1)
    assert "stale" in taker.acquire()
    stalled.release()  # must leave the taker's lock alone
    assert json.loads(path.read_text())["token"] == taker.token
    taker.release()
