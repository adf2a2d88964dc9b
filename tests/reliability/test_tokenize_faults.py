"""Tokenization on a real local Ray under faults and load: a tokenizer actor SIGKILLed mid-stage, and
a corpus ten times larger tokenized in bounded memory."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest
import ray

from bioray.bench import PeakMemory, scaled_corpus
from bioray.config import IngestConfig, SourceConfig, TokenizeConfig, VocabConfig
from bioray.data.ingest import run_ingest
from bioray.data.tokenize import run_tokenize
from bioray.data.vocab import run_vocab

CORPUS = ["corpus/medical-abstracts-tc/medical-abstracts-tc.jsonl.gz", "corpus/ohsumed-text-gcn/ohsumed-text-gcn.jsonl.gz"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=3, include_dashboard=False)
    yield
    ray.shutdown()


def _ingest(data_root: Path, work: Path, copies: int = 1) -> Path:
    sources = [SourceConfig(name=Path(p).parent.name, format="jsonl", path=str(data_root / p)) for p in CORPUS]
    if copies > 1:
        (work / "corpus").mkdir(parents=True)
        sources = scaled_corpus(sources, copies, work / "corpus")
    (work / "ingest").mkdir(parents=True)
    run_ingest(IngestConfig(sources=sources), data_root, work / "ingest")
    return work / "ingest" / "documents"


@pytest.fixture(scope="module")
def corpus(cluster, data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    documents = _ingest(data_root, work)
    (work / "vocab").mkdir()
    run_vocab(VocabConfig(size=8000, sample_docs=3000), documents, work / "vocab", None)
    return documents, work / "vocab" / "tokenizer"


def _content(directory: Path) -> tuple[int, str]:
    """Sequence count and a hash of every sequence (order-free: sorted row digests)."""
    table = pads.dataset(str(directory), format="parquet").to_table(columns=["doc_id", "input_ids", "length"])
    rows = sorted(hashlib.sha256(repr(row).encode()).hexdigest()
                  for row in zip(*(table.column(c).to_pylist() for c in table.column_names)))
    return len(rows), hashlib.sha256("".join(rows).encode()).hexdigest()


def _tokenizer_actors() -> list[psutil.Process]:
    """The processes of the tokenizer actors (Ray titles them `ray::MapWorker(MapBatches(TokenizePacker))`)."""
    return [p for p in psutil.process_iter(["cmdline"]) if "TokenizePacker" in " ".join(p.info["cmdline"] or [])]


@pytest.mark.slow
def test_a_killed_tokenizer_actor_loses_and_duplicates_nothing(corpus, tmp_path):
    documents, tokenizer = corpus
    config = TokenizeConfig(seq_len=128, tokenizer_actors=2, batch_size=100)  # ~90 batches: the kill lands mid-stage
    undisturbed, disturbed = tmp_path / "undisturbed", tmp_path / "disturbed"
    undisturbed.mkdir()
    expected = run_tokenize(config, documents, tokenizer, undisturbed)

    killed: list[int] = []

    def kill_one_actor_mid_stage():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            shards = list((disturbed / "sequences").glob("*.parquet"))
            actors = _tokenizer_actors()
            if len(shards) >= 5 and actors:
                actors[0].kill()  # SIGKILL: no cleanup, like an OOM kill or a lost node
                killed.append(len(shards))
            time.sleep(0.2)

    disturbed.mkdir()
    killer = threading.Thread(target=kill_one_actor_mid_stage, daemon=True)
    killer.start()
    stats = run_tokenize(config, documents, tokenizer, disturbed)
    killer.join(timeout=5)
    assert killed, "no tokenizer actor was killed: the test proves nothing"
    assert killed[0] < expected["tokenize/shards"], "the kill came after the last shard"

    assert _content(disturbed / "sequences") == _content(undisturbed / "sequences")  # same count, same sequences
    assert {k: stats[k] for k in ("tokenize/sequences", "tokenize/tokens", "tokenize/shards")} == {
        k: expected[k] for k in ("tokenize/sequences", "tokenize/tokens", "tokenize/shards")}
    assert sorted(p.name for p in (disturbed / "sequences").iterdir()) == sorted(
        p.name for p in (undisturbed / "sequences").iterdir())  # and no temporary file left by the dead actor


def _tokenize_measured(documents: Path, tokenizer: Path, output: Path) -> tuple[dict, float]:
    output.mkdir()
    with PeakMemory() as memory:  # summed PSS of this process and every Ray process under it
        stats = run_tokenize(TokenizeConfig(seq_len=128, tokenizer_actors=2), documents, tokenizer, output)
    return stats, memory.peak


@pytest.mark.slow
def test_ten_times_the_corpus_tokenizes_in_the_same_memory(corpus, data_root, tmp_path):
    documents, tokenizer = corpus
    small, small_peak = _tokenize_measured(documents, tokenizer, tmp_path / "small")
    ten_times = _ingest(data_root, tmp_path / "ten", copies=10)  # every document ten times, each copy distinct
    large, large_peak = _tokenize_measured(ten_times, tokenizer, tmp_path / "large")
    # Ray's worker pool keeps growing warm over a session (idle workers that ran read tasks): the small
    # corpus is measured before and after the large one, and the large one compared with the larger.
    _, small_again_peak = _tokenize_measured(documents, tokenizer, tmp_path / "small-again")

    print(f"tokenize peak memory: 1x {small_peak / 1e6:.0f} MB, 10x {large_peak / 1e6:.0f} MB, "
          f"1x again {small_again_peak / 1e6:.0f} MB ({small['tokenize/sequences']} / {large['tokenize/sequences']} sequences)")
    assert 10 <= large["tokenize/sequences"] / small["tokenize/sequences"] <= 11  # all of it ("Copy k." adds a bit)
    assert large_peak <= 1.25 * max(small_peak, small_again_peak), (
        f"10x corpus: peak {large_peak / 1e6:.0f} MB vs 1x: {small_peak / 1e6:.0f} / {small_again_peak / 1e6:.0f} MB")
