"""Fail fast with `pretrain.max_failures: -1`: an error of the training code that a retry would meet again
(a bad shard read before the first step; the same exception at the same step twice) fails pretraining at
once with the worker's own exception, where Ray Train alone would retry it forever. A killed worker is
still retried: tests/reliability/test_worker_killed.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoTokenizer

from bioray.config import TokenizeConfig
from bioray.data.tokenize import run_tokenize
from bioray.tracking.context import RunContext
from bioray.train.pretrain import run_pretrain
from tests.integration.test_pretrain_ray import _config


@pytest.fixture(scope="module")
def tokenized(small_corpus, tmp_path_factory) -> Path:
    """Real 64-token sequences and held-out sequences of the small corpus."""
    output = tmp_path_factory.mktemp("fail-fast-tokenized")
    run_tokenize(TokenizeConfig(seq_len=64, tokenizer_actors=1, heldout_fraction=0.05), small_corpus["documents"],
                 small_corpus["tokenizer"], output)
    return output


@pytest.mark.extended  # 2-3 min on a loaded 2-core machine; the decisions alone: tests/test_failfast.py
def test_a_bad_heldout_shard_fails_pretraining_at_once(small_corpus, tokenized, ray_session, tmp_path):
    heldout = tmp_path / "heldout"
    shutil.copytree(tokenized / "heldout", heldout)
    shard = sorted(heldout.glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated: no Parquet footer
    config = _config(num_workers=1, steps=4, long_phase_fraction=0.0, checkpoint_every=2, max_failures=-1,
                     eval_every=2)
    started = time.monotonic()
    with pytest.raises(pa.ArrowInvalid, match="Parquet magic bytes not found") as raised:
        _run(small_corpus, tokenized, tmp_path, config, heldout_dir=heldout)
    # the target is < 60 s; wall-clock here depends on the load of the machine, so the test asserts the cause:
    # the first attempt ended the run (without fail fast, Ray would retry until the test's timeout)
    print(f"a bad held-out shard failed pretraining (max_failures -1) in {time.monotonic() - started:.1f} s")
    assert "before the first optimizer step of attempt 1, on rank 0" in raised.value.__notes__[-1]


@pytest.mark.extended
def test_the_same_error_at_the_same_step_twice_fails_after_two_attempts(small_corpus, tokenized, ray_session,
                                                                         tmp_path):
    """The long phase's shards were tokenized with a larger vocabulary: every attempt fails at the long
    phase's first micro-batch, step 6; the second attempt resumed from the step-4 checkpoint."""
    vocab = len(AutoTokenizer.from_pretrained(str(small_corpus["tokenizer"])))
    long_dir = tmp_path / "sequences-long"
    long_dir.mkdir()
    for shard in sorted((tokenized / "sequences").glob("*.parquet")):
        table = pq.read_table(shard)
        ids = table.column("input_ids").combine_chunks()
        shifted = pa.FixedSizeListArray.from_arrays(pc.add(ids.flatten(), vocab).cast(ids.type.value_type),
                                                    ids.type.list_size)
        pq.write_table(table.set_column(table.column_names.index("input_ids"), "input_ids", shifted),
                       long_dir / shard.name)
    config = _config(steps=8, long_phase_fraction=0.25, long_micro_batch_size=8, checkpoint_every=4,
                     max_failures=-1)
    with pytest.raises(IndexError, match="index out of range") as raised:
        _run(small_corpus, tokenized, tmp_path, config, long_dir=long_dir)
    assert "raised at step 6 on attempts 1 and 2 alike" in raised.value.__notes__[-1]


def _run(small_corpus, tokenized: Path, tmp: Path, config, heldout_dir: Path | None = None,
         long_dir: Path | None = None):
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    (tmp / "out").mkdir()
    return run_pretrain(config, sequences_dir=tokenized / "sequences", long_sequences_dir=long_dir,
                        tokenizer_dir=small_corpus["tokenizer"], output=tmp / "out", storage=str(tmp / "storage"),
                        run_name="failfast", context=RunContext(uri, experiment.experiment_id, run_id, run_id),
                        init_checkpoint=None, heldout_dir=heldout_dir)
