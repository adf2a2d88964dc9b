"""FailFast's decision on the Ray Train controller: which failed attempts a retry would only repeat."""

from __future__ import annotations

import pickle

import pytest
from ray.exceptions import ActorDiedError, NodeDiedError
from ray.train import ControllerError

from bioray.train.failfast import Deterministic, FailFast, tag, unwrap


def _tagged(error: Exception, first_step: int | None, step: int | None) -> Exception:
    tag(error, first_step, step)
    return pickle.loads(pickle.dumps(error))  # as the controller gets it from a worker


def test_an_error_before_the_first_step_of_any_attempt_is_not_retried():
    with pytest.raises(Deterministic, match="before the first optimizer step of attempt 1, on rank 1"):
        FailFast().after_exception(None, {1: _tagged(ValueError("empty folder"), None, None)})
    with pytest.raises(Deterministic, match="before the first optimizer step of attempt 1"):
        FailFast().after_exception(None, {0: _tagged(OSError("bad shard"), 40, 40)})  # a resumed attempt


def test_the_same_error_at_the_same_step_twice_is_not_retried_a_third_time():
    callback = FailFast()
    callback.after_exception(None, {0: _tagged(IndexError("index out of range in self"), 4, 6)})
    callback.after_exception(None, {0: _tagged(IndexError("index out of range in self"), 4, 7)})  # another step
    callback.after_exception(None, {0: _tagged(IndexError("another message"), 4, 7)})
    with pytest.raises(Deterministic, match="at step 7 on attempts 3 and 4 alike") as raised:
        callback.after_exception(None, {1: _tagged(IndexError("another message"), 4, 7)})
    assert isinstance(pickle.loads(pickle.dumps(raised.value)).error, IndexError)  # controller → driver


def test_a_crash_is_retried_with_the_errors_it_causes_beside_it():
    callback = FailFast()
    peer_lost = RuntimeError("[gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer")
    callback.after_exception(None, {0: _tagged(peer_lost, 3, 3)})  # before the first step, but collateral
    callback.after_exception(None, {0: _tagged(NodeDiedError("node lost"), None, None)})
    callback.after_exception(None, {0: _tagged(ValueError("x"), 3, 5), 1: ActorDiedError()})
    callback.after_exception(None, {0: _tagged(ValueError("x"), 3, 5)})  # the attempt before was a crash
    with pytest.raises(Deterministic):
        callback.after_exception(None, {0: _tagged(ValueError("x"), 3, 5)})


def test_the_driver_gets_the_workers_own_exception_with_why():
    error = unwrap(ControllerError(Deterministic(KeyError("input_ids"), "raised at step 2 on attempts 1 and 2")))
    assert isinstance(error, KeyError) and error.__notes__ == [
        "not retried (fail fast): raised at step 2 on attempts 1 and 2"]
    other = ControllerError(RuntimeError("controller"))
    assert unwrap(other) is other
