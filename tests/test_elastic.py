"""pretrain.min_workers: the config's checks, the batch split and data skip on another number of workers
(the lost-node run itself is tests/reliability/test_node_lost.py, extended tier)."""

import pytest
from pydantic import ValidationError

from bioray.config import PretrainConfig
from bioray.train.deepspeed import deepspeed_config
from bioray.train.elastic import resumed_skip, scaling_workers


def _config(**overrides) -> PretrainConfig:
    return PretrainConfig(**{"num_workers": 4, "global_batch_size": 64, "micro_batch_size": 8, **overrides})


def test_not_elastic_by_default():
    config = _config()
    assert not config.elastic and scaling_workers(config) == 4
    assert scaling_workers(_config(min_workers=4)) == 4
    assert scaling_workers(_config(min_workers=2, global_batch_size=96)) == (2, 4)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"min_workers": 5}, r"pretrain.min_workers \(5\) must be at most pretrain.num_workers \(4\)"),
    ({"min_workers": 0}, r"min_workers"),
    ({"min_workers": 3}, r"multiple of 3 workers \(min_workers..\) x micro_batch_size \(3 x 8 = 24\)"),
    ({"min_workers": 1, "zero_stage": 3}, r"min_workers below num_workers needs zero_stage 0, 1 or 2"),
])
def test_min_workers_is_checked(overrides, message):
    with pytest.raises(ValidationError, match=message):
        _config(**overrides)


def test_the_global_batch_stays_on_fewer_workers():
    config = _config(min_workers=1, global_batch_size=96)
    for world, accumulation in ((4, 3), (3, 4), (2, 6), (1, 12)):
        settings = deepspeed_config(config, world)
        assert settings["train_batch_size"] == 96 and settings["gradient_accumulation_steps"] == accumulation
        assert "checkpoint" not in settings
    assert deepspeed_config(config, 1, load_universal=True)["checkpoint"] == {"load_universal": True}


def test_data_skip_is_each_ranks_share_of_what_all_ranks_trained():
    position = {"phase": 0, "epoch": 2, "micro": 10, "world": 2}
    assert resumed_skip(position, 2) == 10  # the same split: exactly what this rank trained
    assert resumed_skip(position, 1) == 20  # one rank: both ranks' micro-batches
    assert resumed_skip({**position, "world": 1, "micro": 21}, 2) == 10  # rounded down: one micro-batch again
    assert resumed_skip({"micro": 7}, 3) == 7  # a checkpoint from before elastic runs: its own world
