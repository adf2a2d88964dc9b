"""Tokenization on a real local Ray under faults and load: a tokenizer actor SIGKILLed while it holds a
batch, and a corpus ten times larger tokenized in bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from ray import cloudpickle  # Ray's own copy: what ships the actor class to the workers

import bioray.data.tokenize
from bioray.config import TokenizeConfig
from bioray.data.tokenize import TokenizePacker, run_tokenize

REPO = Path(__file__).resolve().parents[2]


def _content(directory: Path) -> tuple[int, str]:
    """Sequence count and a hash of every sequence (order-free: sorted row digests)."""
    table = pads.dataset(str(directory), format="parquet").to_table(columns=["doc_id", "input_ids", "length"])
    rows = sorted(hashlib.sha256(repr(row).encode()).hexdigest()
                  for row in zip(*(table.column(c).to_pylist() for c in table.column_names)))
    return len(rows), hashlib.sha256("".join(rows).encode()).hexdigest()


class HoldingPacker(TokenizePacker):
    """The real tokenizer actor, except that the first actor to reach its third batch records its pid
    and the batch, then holds the batch until it is killed. The batch is in flight when the kill
    lands, so the run can finish only if Ray retries it elsewhere."""

    hold_file = ""  # set by the test before the class is shipped to the workers (pickled by value)

    def tokenize_batch(self, batch, rows):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            try:
                fd = os.open(self.hold_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # another attempt already held a batch: work normally
                return super().tokenize_batch(batch, rows)
            os.write(fd, json.dumps({"pid": os.getpid(), "first_doc": batch.column("doc_id")[0].as_py()}).encode())
            os.close(fd)
            time.sleep(120)  # the test kills this process long before
            raise RuntimeError("the held batch's actor was never killed")
        return super().tokenize_batch(batch, rows)


def test_a_killed_tokenizer_actor_loses_and_duplicates_nothing(small_corpus, tmp_path, monkeypatch):
    import psutil

    documents, tokenizer = small_corpus["documents"], small_corpus["tokenizer"]
    config = TokenizeConfig(seq_len=64, tokenizer_actors=2, batch_size=50)  # 440 documents in 16 row groups of ~28
    undisturbed, disturbed = tmp_path / "undisturbed", tmp_path / "disturbed"
    undisturbed.mkdir()
    expected = run_tokenize(config, documents, tokenizer, undisturbed)

    marker = tmp_path / "held.json"
    monkeypatch.setattr(HoldingPacker, "hold_file", str(marker))
    monkeypatch.setattr(bioray.data.tokenize, "TokenizePacker", HoldingPacker)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    killed: list[dict] = []

    def kill_the_holder():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                held = json.loads(marker.read_text())
            except (FileNotFoundError, ValueError):  # not yet, or being written
                time.sleep(0.1)
                continue
            psutil.Process(held["pid"]).kill()  # SIGKILL: no cleanup, like an OOM kill or a lost node
            killed.append(held)
            return

    disturbed.mkdir()
    killer = threading.Thread(target=kill_the_holder, daemon=True)
    killer.start()
    try:
        stats = run_tokenize(config, documents, tokenizer, disturbed)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    killer.join(timeout=5)
    assert killed, "no actor held a batch: the test proves nothing"
    assert not psutil.pid_exists(killed[0]["pid"])

    # the held batch was retried: its first document is in the output, and so is everything else, once
    assert _content(disturbed / "sequences") == _content(undisturbed / "sequences")
    assert killed[0]["first_doc"] in set(pads.dataset(str(disturbed / "sequences")).to_table(
        columns=["doc_id"]).column("doc_id").to_pylist()) | {None}
    assert {k: stats[k] for k in ("tokenize/sequences", "tokenize/tokens", "tokenize/shards")} == {
        k: expected[k] for k in ("tokenize/sequences", "tokenize/tokens", "tokenize/shards")}
    assert sorted(p.name for p in (disturbed / "sequences").iterdir()) == sorted(
        p.name for p in (undisturbed / "sequences").iterdir())  # and no temporary file left by the dead actor


PEAK_SCRIPT = """
import json, sys
from pathlib import Path
import ray
from bioray.bench.memory import PeakMemory
from bioray.config import TokenizeConfig
from bioray.data.tokenize import run_tokenize
ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
documents, tokenizer, output = map(Path, sys.argv[1:4])
output.mkdir()
with PeakMemory() as memory:  # summed PSS of this process and every Ray process under it
    stats = run_tokenize(TokenizeConfig(seq_len=128, tokenizer_actors=2), documents, tokenizer, output)
print(json.dumps({"peak": memory.peak, "sequences": stats["tokenize/sequences"]}))
"""


def _tokenize_in_fresh_ray(documents: Path, tokenizer: Path, output: Path) -> dict:
    """Tokenize in a new Ray session of its own, so that no warm worker of an earlier run counts."""
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(documents), str(tokenizer), str(output)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.extended
@pytest.mark.needs_data("corpus/ohsumed-text-gcn")  # with the 600 abstracts of the sample: a corpus big enough to grow
def test_ten_times_the_corpus_tokenizes_in_memory_that_does_not_follow_it(small_corpus, data_root, tmp_path):
    from bioray.bench.tokenize import scaled_corpus
    from bioray.config import IngestConfig, SourceConfig
    from bioray.data.ingest import run_ingest

    tokenizer, corpus = small_corpus["tokenizer"], data_root / "corpus"
    sources = [SourceConfig(name=name, format="jsonl", path=str(next((corpus / name).glob("*.jsonl.gz"))))
               for name in ("medical-abstracts-tc", "ohsumed-text-gcn")]
    documents = {}
    for copies in (1, 10):  # every document `copies` times, each copy distinct
        work = tmp_path / f"x{copies}"
        for directory in ("ingest", "corpus"):
            (work / directory).mkdir(parents=True)
        scaled = scaled_corpus(sources, copies, work / "corpus") if copies > 1 else sources
        run_ingest(IngestConfig(sources=scaled), corpus, work / "ingest")
        documents[copies] = work / "ingest" / "documents"
    small = _tokenize_in_fresh_ray(documents[1], tokenizer, tmp_path / "small")
    large = _tokenize_in_fresh_ray(documents[10], tokenizer, tmp_path / "large")
    print(f"tokenize peak memory, each in a fresh Ray: 1x {small['peak'] / 1e6:.0f} MB, 10x {large['peak'] / 1e6:.0f} "
          f"MB")
    assert 10 <= large["sequences"] / small["sequences"] <= 11  # all of it ("Copy k." adds a bit)
    # Ten times the data in well under twice the memory: what grows with the corpus would show as
    # ~10x. (The precise growth is measured by `bioray bench tokenize`, not asserted here.)
    assert large["peak"] < 2 * small["peak"], (small, large)
