"""`bioray bench tokenize`: the corpus pipeline's speed against the tokenizer it wraps, in one run.

(a) the raw tokenizer in one process, one thread, on the corpus text; (b) the tokenize+pack stage
on Ray Data over all cores, end to end (documents Parquet -> tokenize -> pack -> Parquet); (c) the
ingest stage (raw files -> parse -> sentence-split -> documents Parquet). Peak memory is the
largest summed PSS of this process and its children (the Ray workers), sampled every 0.5 s while
ingest and tokenize+pack run (not while the benchmark trains its vocabulary or times the raw
tokenizer).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc

from bioray.bench.memory import PeakMemory
from bioray.config import IngestConfig, SourceConfig, TokenizeConfig
from bioray.data.streaming import row_group_tables
from bioray.workdir import disk_size


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
    """One source per corpus file under data, its format told by its name (and root element); named
    after its folder and numbered (source names are unique identifiers)."""
    sources = []
    for path in sorted(p for p in data.resolve().rglob("*") if p.is_file()):
        fmt = _format_of(path)
        if fmt:
            folder = re.sub(r"[^A-Za-z0-9._-]+", "-", path.parent.name).strip(".-")[:40] or "corpus"
            sources.append(SourceConfig(name=f"{folder}-{len(sources) + 1}", format=fmt, path=str(path)))
    if not sources:
        raise ValueError(f"{data}: no corpus files (.jsonl[.gz], .xml[.gz], .nxml, .txt)")
    return sources


def _text_bytes_and_sample(documents_dir: Path, sample_bytes: int = 20_000_000) -> tuple[int, list[str]]:
    """UTF-8 bytes of all document text, streamed, and the first sample_bytes of texts (tokenizer input)."""
    total, sample, kept = 0, [], 0
    for batch in row_group_tables(documents_dir, columns=["text"]):
        text = batch.column("text")
        total += pc.sum(pc.binary_length(text)).as_py() or 0
        if kept < sample_bytes:
            for value in text.to_pylist():
                sample.append(value)
                kept += len(value.encode())
    return total, sample


def _in_a_process(function, *args):
    """function(*args) in a spawned process: the bench's own scans of the whole corpus would otherwise
    leave their high-water mark in the driver, whose memory the bench measures."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def scaled_corpus(sources: list[SourceConfig], copies: int, target: Path) -> list[SourceConfig]:
    """The JSON Lines and plain-text sources written `copies` times, each copy's ids and texts made distinct.

    For the bounded-memory check: copy k has ids `<id>#k` (text: its own file) and every text prefixed
    `Copy k.`, so deduplication keeps every copy and the corpus really is `copies` times larger. The
    XML sources (small samples) are kept once, as they are.
    """
    scaled = []
    for index, source in enumerate(sources):
        if source.format not in ("jsonl", "text"):
            scaled.append(source)
            continue
        opener = gzip.open if source.path.endswith(".gz") else open
        name = Path(source.path).name.removesuffix(".gz")
        if source.format == "jsonl":
            path = target / f"{index}-{name}"
            with opener(source.path, "rt", encoding="utf-8") as lines, open(path, "w", encoding="utf-8") as out:
                for line in lines:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    for k in range(copies):
                        if k:
                            record = {**record, source.id_field: f"{record.get(source.id_field)}#{k}",
                                      source.text_field: f"Copy {k}. {record.get(source.text_field)}"}
                        out.write(json.dumps(record) + "\n")
        else:  # one file per copy: a text document's id is its file and line
            path = target / f"{index}-{Path(name).stem}"
            path.mkdir()
            for k in range(copies):
                with opener(source.path, "rt", encoding="utf-8") as lines, \
                        open(path / f"copy{k}-{name}", "w", encoding="utf-8") as out:
                    out.writelines(f"Copy {k}. {line}" if k and line.strip() else line for line in lines)
        scaled.append(source.model_copy(update={"path": str(path)}))
    return scaled


def raw_tokenizer_speed(tokenizer_dir: Path, sample: list[str]) -> dict:
    """Tokens/s and MB/s of the fast tokenizer alone: one process, one thread, batches of 64 texts."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    size = sum(len(text.encode()) for text in sample)
    started = time.perf_counter()
    tokens = 0
    for begin in range(0, len(sample), 64):
        tokens += sum(len(ids) for ids in tokenizer(sample[begin:begin + 64], add_special_tokens=False)["input_ids"])
    seconds = time.perf_counter() - started
    return {"raw_tokens_per_s": tokens / seconds, "raw_mb_per_s": size / 1e6 / seconds}


def raw_tokenizer_parallel(tokenizer_dir: Path, sample: list[str], processes: int) -> float:
    """Summed tokens/s of the raw tokenizer run in `processes` processes at once, each on the whole sample.

    What the cores of this machine really give when all are busy: the ceiling for any pipeline here.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(raw_tokenizer_speed, [(tokenizer_dir, sample)] * processes)
    return sum(r["raw_tokens_per_s"] for r in results)


def bench_tokenize(data: Path, tokenizer_dir: Path | None = None, seq_len: int = 128, vocab_size: int = 30522,
                   scale: int = 1) -> dict:
    import ray

    from bioray.data.ingest import run_ingest
    from bioray.data.tokenize import run_tokenize
    from bioray.data.vocab import train_wordpiece

    cores = os.cpu_count() or 1
    sources = bench_sources(data)
    with tempfile.TemporaryDirectory(prefix="bioray-bench-") as tmp:
        work = Path(tmp)
        if scale > 1:
            (work / "corpus").mkdir()
            sources = scaled_corpus(sources, scale, work / "corpus")
        ingest = IngestConfig(sources=sources)
        # One tokenizer actor per core; one logical CPU more, as in every run of this bench so far
        # (so that runs compare), lets a third ingest task overlap the others' file I/O.
        ray.init(num_cpus=cores + 1, include_dashboard=False, ignore_reinit_error=True)
        try:
            (work / "ingest").mkdir()
            started = time.perf_counter()
            with PeakMemory() as ingest_memory:
                ingest_metrics = run_ingest(ingest, data, work / "ingest")
            ingest_seconds = time.perf_counter() - started
            text_bytes, sample = _in_a_process(_text_bytes_and_sample, work / "ingest" / "documents")

            if tokenizer_dir is None:  # not timed: the vocabulary is an input of the benchmark
                tokenizer_dir = work / "tokenizer"
                tokenizer = train_wordpiece(sample, vocab_size, lowercase=False, min_frequency=2)
                tokenizer.save_pretrained(str(tokenizer_dir))
            # This VM's core speed drifts by 2x over minutes: the raw tokenizer is timed before and
            # after the pipeline and its best figure is used, which can only lower the ratio.
            raws = [raw_tokenizer_speed(tokenizer_dir, sample)]
            raw_all_cores = raw_tokenizer_parallel(tokenizer_dir, sample, cores)

            (work / "tokenize").mkdir()
            started = time.perf_counter()
            with PeakMemory() as tokenize_memory:
                stats = run_tokenize(TokenizeConfig(seq_len=seq_len, tokenizer_actors=cores),
                                     work / "ingest" / "documents", tokenizer_dir, work / "tokenize")
            pipeline_seconds = time.perf_counter() - started
            output_bytes = {"documents": disk_size(work / "ingest" / "documents"),
                            "latest": disk_size(work / "ingest" / "latest"), "sequences": disk_size(work / "tokenize")}
            raws.append(raw_tokenizer_speed(tokenizer_dir, sample))
            raw_all_cores = max(raw_all_cores, raw_tokenizer_parallel(tokenizer_dir, sample, cores))
            raw = max(raws, key=lambda r: r["raw_tokens_per_s"])
            del sample
        finally:
            ray.shutdown()
    real_tokens = stats["tokenize/tokens"] - 3 * stats["tokenize/sequences"]  # [CLS]/[SEP] are not text
    pipeline_tokens_per_s = real_tokens / pipeline_seconds
    return {
        "cores": cores,
        "scale": scale,
        "documents": ingest_metrics["ingest/documents"],
        "text_mb": text_bytes / 1e6,
        "raw_tokens_per_s": raw["raw_tokens_per_s"],
        "raw_mb_per_s": raw["raw_mb_per_s"],
        "raw_tokens_per_s_runs": [r["raw_tokens_per_s"] for r in raws],
        "raw_all_cores_tokens_per_s": raw_all_cores,
        "core_scaling": raw_all_cores / (cores * raw["raw_tokens_per_s"]),
        "pipeline_tokens_per_s": pipeline_tokens_per_s,
        "pipeline_seconds": pipeline_seconds,
        "ratio": pipeline_tokens_per_s / (cores * raw["raw_tokens_per_s"]),
        "ratio_to_all_cores": pipeline_tokens_per_s / raw_all_cores,
        "ingest_mb_per_s": text_bytes / 1e6 / ingest_seconds,
        "ingest_seconds": ingest_seconds,
        "ingest_s_per_gb": ingest_seconds / (text_bytes / 1e9),
        "tokenize_s_per_gb": pipeline_seconds / (text_bytes / 1e9),
        "input_files": ingest_metrics["ingest/files"],
        "ingest_buckets": ingest_metrics["ingest/buckets"],
        "ingest_scratch_files": ingest_metrics["ingest/scratch_files"],
        "fill_ratio": stats["tokenize/fill_ratio"],
        "tokens": real_tokens,
        "output_mb": {name: size / 1e6 for name, size in output_bytes.items()},
        "peak_rss_mb": max(ingest_memory.peak, tokenize_memory.peak) / 1e6,
        "peak_ingest_mb": ingest_memory.peak / 1e6,
        "peak_tokenize_mb": tokenize_memory.peak / 1e6,
        "peak_driver_ingest_mb": ingest_memory.driver_peak / 1e6,
        "peak_driver_tokenize_mb": tokenize_memory.driver_peak / 1e6,
        "at_peak_ingest_mb": {kind: pss / 1e6 for kind, pss in ingest_memory.at_peak.items()},
        "at_peak_tokenize_mb": {kind: pss / 1e6 for kind, pss in tokenize_memory.at_peak.items()},
    }


def _bench_in_child(queue, *args, **kwargs) -> None:
    try:
        queue.put(("ok", bench_tokenize(*args, **kwargs)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def bench_tokenize_scales(data: Path, tokenizer_dir: Path | None, seq_len: int, scales: list[int]) -> dict:
    """bench_tokenize at each scale, each in a fresh process (so a fresh Ray session and driver: nothing
    one scale allocated counts at the next). The first scale's figures are the top-level keys; `runs`
    has every scale's, each with its growth against the first scale (memory_growth_*: peak over the first
    scale's; *_s_per_gb_growth: seconds per GB of text over the first's); the top-level growth is the
    last scale's."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    runs = []
    for scale in scales:
        queue = context.Queue()
        child = context.Process(target=_bench_in_child, args=(queue, data, tokenizer_dir, seq_len),
                                kwargs={"scale": scale})
        child.start()
        status, result = queue.get()  # before join: a large result would otherwise block the child's exit
        child.join()
        if status != "ok":
            raise RuntimeError(f"bench tokenize at scale {scale}: {result}")
        runs.append(result)
    return {**runs[0], "runs": [_against_first(run, runs[0]) for run in runs], **_growth(runs[-1], runs[0])}


def _growth(run: dict, first: dict) -> dict:
    """Peak memory and time per GB of text at this scale over the first scale's."""
    return {"memory_growth_ingest": run["peak_ingest_mb"] / first["peak_ingest_mb"],
            "memory_growth_tokenize": run["peak_tokenize_mb"] / first["peak_tokenize_mb"],
            "memory_growth_driver": (max(run["peak_driver_ingest_mb"], run["peak_driver_tokenize_mb"])
                                     / max(first["peak_driver_ingest_mb"], first["peak_driver_tokenize_mb"])),
            "ingest_s_per_gb_growth": run["ingest_s_per_gb"] / first["ingest_s_per_gb"],
            "tokenize_s_per_gb_growth": run["tokenize_s_per_gb"] / first["tokenize_s_per_gb"]}


def _against_first(run: dict, first: dict) -> dict:
    """One scale's figures with its growth against the first scale (1.0 for the first itself)."""
    return {**run, **_growth(run, first)}


def render(result: dict) -> str:
    """The result as the table `bioray bench tokenize` prints."""
    lines = [
        f"cores                      {result['cores']}",
        f"corpus                     {result['documents']} documents, {result['text_mb']:.1f} MB of text",
        f"(a) raw tokenizer, 1 core  {result['raw_tokens_per_s'] / 1e6:.3f} M tokens/s, "
        f"{result['raw_mb_per_s']:.2f} MB/s",
        f"    raw tokenizer, {result['cores']} processes at once "
        f"{result['raw_all_cores_tokens_per_s'] / 1e6:.3f} M tokens/s (core scaling {result['core_scaling']:.2f})",
        f"(b) tokenize+pack on Ray   {result['pipeline_tokens_per_s'] / 1e6:.3f} M tokens/s "
        f"({result['pipeline_seconds']:.1f} s)",
        f"    ratio (b) / (cores x a) {result['ratio']:.2f}; (b) / all-cores raw {result['ratio_to_all_cores']:.2f}",
        f"(c) ingest                 {result['ingest_mb_per_s']:.2f} MB/s of text ({result['ingest_seconds']:.1f} s)",
        f"fill ratio                 {result['fill_ratio']:.3f}"]
    for run in result["runs"]:
        lines += [f"peak memory at {run['scale']:>3}x      {run['peak_rss_mb']:.0f} MB (ingest "
                  f"{run['peak_ingest_mb']:.0f}, tokenize {run['peak_tokenize_mb']:.0f}; driver "
                  f"{run['peak_driver_ingest_mb']:.0f} / {run['peak_driver_tokenize_mb']:.0f}), {run['documents']} "
                  f"documents, {run['text_mb']:.0f} MB",
                  f"  time per GB of text      ingest {run['ingest_s_per_gb']:.0f} s, tokenize "
                  f"{run['tokenize_s_per_gb']:.0f} s; ingest scratch files {run['ingest_scratch_files']} "
                  f"({run['input_files']} inputs, {run['ingest_buckets']} buckets)"]
    if len(result["runs"]) > 1:
        lines.append(f"memory growth              ingest {result['memory_growth_ingest']:.2f}, tokenize "
                     f"{result['memory_growth_tokenize']:.2f}, driver {result['memory_growth_driver']:.2f}; "
                     f"time per GB ingest {result['ingest_s_per_gb_growth']:.2f}, tokenize "
                     f"{result['tokenize_s_per_gb_growth']:.2f}")
    return "\n".join(lines)
