"""`bioray bench tokenize`: the corpus pipeline's speed against the tokenizer it wraps, in one run.

(a) the raw tokenizer in one process, one thread, on the corpus text; (b) the tokenize+pack stage
on Ray Data over all cores, end to end (documents Parquet -> tokenize -> pack -> Parquet); (c) the
ingest stage (raw files -> parse -> sentence-split -> documents Parquet). Peak memory is the
largest summed PSS of this process and its children (the Ray workers), sampled every 0.5 s.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads

from bioray.config import IngestConfig, SourceConfig, TokenizeConfig


class PeakMemory:
    """Largest summed PSS of this process tree while the context is open.

    PSS, not RSS: Ray's workers map the same shared object-store pages, and summing their RSS
    would count those pages once per worker.
    """

    def __init__(self, interval: float = 0.5):
        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _format_of(path: Path) -> str | None:
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".nxml"):
        return "pmc"
    if name.endswith((".xml", ".xml.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            head = stream.read(4096)
        return "medline" if b"<PubmedArticle" in head else "pmc"
    if name.endswith((".txt", ".txt.gz")):
        return "text"
    return None


def bench_sources(data: Path) -> list[SourceConfig]:
    """One source per corpus file under data, its format told by its name (and root element)."""
    sources = []
    for path in sorted(p for p in data.resolve().rglob("*") if p.is_file()):
        fmt = _format_of(path)
        if fmt:
            sources.append(SourceConfig(name=path.parent.name, format=fmt, path=str(path)))
    if not sources:
        raise ValueError(f"{data}: no corpus files (.jsonl[.gz], .xml[.gz], .nxml, .txt)")
    return sources


def _text_bytes(documents_dir: Path) -> tuple[int, list[str]]:
    texts = pads.dataset(str(documents_dir), format="parquet").to_table(columns=["text"]).column("text").to_pylist()
    return sum(len(t.encode()) for t in texts), texts


def raw_tokenizer_speed(tokenizer_dir: Path, texts: list[str], budget_bytes: int = 20_000_000) -> dict:
    """Tokens/s and MB/s of the fast tokenizer alone: one process, one thread, batches of 64 texts."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sample, size = [], 0
    for text in texts:
        if size >= budget_bytes:
            break
        sample.append(text)
        size += len(text.encode())
    started = time.perf_counter()
    tokens = 0
    for begin in range(0, len(sample), 64):
        tokens += sum(len(ids) for ids in tokenizer(sample[begin:begin + 64], add_special_tokens=False)["input_ids"])
    seconds = time.perf_counter() - started
    return {"raw_tokens_per_s": tokens / seconds, "raw_mb_per_s": size / 1e6 / seconds}


def bench_tokenize(data: Path, tokenizer_dir: Path | None = None, seq_len: int = 128, vocab_size: int = 30522) -> dict:
    import ray

    from bioray.data.ingest import run_ingest
    from bioray.data.tokenize import run_tokenize
    from bioray.data.vocab import train_wordpiece

    cores = os.cpu_count() or 1
    sources = bench_sources(data)
    with tempfile.TemporaryDirectory(prefix="bioray-bench-") as tmp:
        work = Path(tmp)
        ingest = IngestConfig(sources=sources, partitions=cores * 2)
        # One tokenizer actor per core holds every core; one more logical CPU lets the Parquet read,
        # shuffle and write tasks of the same pipeline run beside them instead of waiting forever.
        ray.init(num_cpus=cores + 1, include_dashboard=False, ignore_reinit_error=True)
        try:
            with PeakMemory() as memory:
                (work / "ingest").mkdir()
                started = time.perf_counter()
                ingest_metrics = run_ingest(ingest, data, work / "ingest")
                ingest_seconds = time.perf_counter() - started
                text_bytes, texts = _text_bytes(work / "ingest" / "documents")

                if tokenizer_dir is None:  # not timed: the vocabulary is an input of the benchmark
                    tokenizer_dir = work / "tokenizer"
                    train_wordpiece(texts[:20000], vocab_size, lowercase=False, min_frequency=2).save_pretrained(str(tokenizer_dir))
                raw = raw_tokenizer_speed(tokenizer_dir, texts)
                del texts

                (work / "tokenize").mkdir()
                started = time.perf_counter()
                stats = run_tokenize(TokenizeConfig(seq_len=seq_len, num_shards=cores, tokenizer_actors=cores),
                                     work / "ingest" / "documents", tokenizer_dir, work / "tokenize")
                pipeline_seconds = time.perf_counter() - started
        finally:
            ray.shutdown()
    real_tokens = stats["tokenize/tokens"] - 3 * stats["tokenize/sequences"]  # [CLS]/[SEP] are not text
    pipeline_tokens_per_s = real_tokens / pipeline_seconds
    return {
        "cores": cores,
        "documents": ingest_metrics["ingest/documents"],
        "text_mb": text_bytes / 1e6,
        "raw_tokens_per_s": raw["raw_tokens_per_s"],
        "raw_mb_per_s": raw["raw_mb_per_s"],
        "pipeline_tokens_per_s": pipeline_tokens_per_s,
        "pipeline_seconds": pipeline_seconds,
        "ratio": pipeline_tokens_per_s / (cores * raw["raw_tokens_per_s"]),
        "ingest_mb_per_s": text_bytes / 1e6 / ingest_seconds,
        "ingest_seconds": ingest_seconds,
        "fill_ratio": stats["tokenize/fill_ratio"],
        "peak_rss_mb": memory.peak / 1e6,
    }
