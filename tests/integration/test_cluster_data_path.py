"""The corpus path on a two-node Ray cluster: ingest's bucket tasks and tokenize's actors run on both
nodes, write to storage both see, and give what one node gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from transformers import AutoTokenizer

from tests.support.cluster import two_node_ray_cluster
from tests.support.data import pubmed_raw_records

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


def _corpus_run(data: Path, output: Path, tokenizer: Path, env: dict | None = None,
                address: str | None = None) -> dict:
    command = [sys.executable, "-m", "tests.support.corpus_run", str(data), str(output), "--tokenizer", str(tokenizer)]
    done = subprocess.run(command + (["--address", address] if address else []), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _documents(output: Path):
    table = pads.dataset(str(output / "ingest" / "documents"), format="parquet").to_table().to_pandas()
    table = table.sort_values("doc_id").reset_index(drop=True)
    return table.assign(sentence_starts=table["sentence_starts"].map(list),
                        sentence_ends=table["sentence_ends"].map(list))


def _token_counts(output: Path, vocab: int) -> np.ndarray:
    """How often each token id occurs in the packed sequences: the same text whatever the batching."""
    counts = np.zeros(vocab, dtype=np.int64)
    dataset = pads.dataset(str(output / "tokenize" / "sequences"), format="parquet")
    for batch in dataset.to_batches(columns=["input_ids"]):
        counts += np.bincount(batch.column("input_ids").values.to_numpy(), minlength=vocab)
    return counts


def test_ingest_and_tokenize_on_two_nodes_equal_one_node(tmp_path, data_root):
    import os

    data, tokenizer = data_root / "pubmed-raw", tmp_path / "tokenizer"
    alone = _corpus_run(data, tmp_path / "one-node", tokenizer)
    with two_node_ray_cluster({}) as cluster:
        env = {**os.environ, **cluster.env, "RAY_ADDRESS": ""}
        spread = _corpus_run(data, tmp_path / "two-nodes", tokenizer, env, cluster.address)

    assert alone["ingest/nodes"] == alone["tokenize/nodes"] == 1
    assert spread["ingest/nodes"] == 2 and spread["tokenize/nodes"] == 2  # work on both nodes
    assert spread["ingest/documents"] == alone["ingest/documents"] > 0.95 * pubmed_raw_records(data_root)
    assert _documents(tmp_path / "two-nodes").equals(_documents(tmp_path / "one-node"))
    assert spread["tokenize/tokens"] == alone["tokenize/tokens"]
    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer)))
    assert (_token_counts(tmp_path / "two-nodes", vocab) == _token_counts(tmp_path / "one-node", vocab)).all()
