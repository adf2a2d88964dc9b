"""Tokenize stage: documents Parquet -> packed token sequences in Parquet shards.

Tokenizers are stateful, so they live in Ray Data actors (ActorPoolStrategy). The actors read the
documents themselves, one Parquet row group at a time (data/row_groups.py), and cut each into batches
of tokenize.batch_size. Each batch is tokenized in one fast-tokenizer call with the tokenizer's [SEP]
string between sentences (a special token, so it comes back as one id marking each sentence start
without the cost of character offsets), then packed with numpy over the whole batch, and written by
the actor as one Parquet shard named after the batch's content: neither the documents nor the
sequences travel through the object store (what an actor holds is one row group, whatever the corpus), and a row
group retried after an actor died rewrites the same shards atomically instead of adding duplicates.
The dataset's rows are only per-shard counts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from transformers import AutoTokenizer

from bioray.config import TokenizeConfig
from bioray.data.ingest import document_counts, seeded_slice
from bioray.data.pack import pack_documents, pack_stream
from bioray.data.row_groups import actor_pool, batches, read_unit, row_group_units, temporary_path, units_dataset
from bioray.data.streaming import capped, release_memory

COUNT_COLUMNS = ("part", "seq_len", "shard", "source", "sequences", "tokens", "node")  # one row per shard written
ENCODE_CHUNK = 64  # documents per tokenizer call (docs/performance.md, Measured choices)


def batch_rng(seed: int, first_doc_id: str) -> np.random.Generator:
    """Deterministic for the same batch, whichever actor or run tokenizes it."""
    digest = hashlib.sha256(f"{seed}:{first_doc_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class TokenizePacker:
    """Ray Data actor: holds one tokenizer, turns document batches into packed sequences."""

    def __init__(self, tokenizer_dir: str, output_dirs: dict[int, str], seed: int, batch_size: int,
                 packing: str = "stream", nsp: bool = False, heldout_dir: str | None = None,
                 heldout_fraction: float = 0.0, only_new: bool = False):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per actor: Ray provides the parallelism
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.backend = tokenizer.backend_tokenizer
        # a checkpoint's tokenizer.json may truncate and pad (sentence-transformers ship 128 and Fixed(128)):
        # documents are packed whole, so neither may happen here
        self.backend.no_truncation()
        self.backend.no_padding()
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.word_start = np.array([not p.startswith("##") for p in pieces], dtype=np.int8)  # by token id
        self.cls_id, self.sep_id, self.marker = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.sep_token
        self.seed, self.batch_size, self.packing, self.nsp, self.only_new = seed, batch_size, packing, nsp, only_new
        self.output_dirs = {int(length): Path(path) for length, path in output_dirs.items()}
        self.heldout_dir = Path(heldout_dir) if heldout_dir else None
        self.heldout_fraction = heldout_fraction
        self.node = ray.get_runtime_context().get_node_id()  # where the shards were written

    def _marked(self, text: str, starts: list[int]) -> str:
        cuts = [s for s in starts if 0 < s < len(text)]
        return self.marker.join(text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]))

    def __call__(self, units: pa.Table) -> dict[str, np.ndarray]:
        """Read each unit's documents and tokenize them batch by batch; one count row per shard written."""
        rows: dict[str, list] = {k: [] for k in COUNT_COLUMNS}
        for unit in units.to_pylist():
            for batch in batches(read_unit(unit, only_new=self.only_new), self.batch_size):
                self.tokenize_batch(batch, rows)
            release_memory(collect_cycles=False)  # else the actor keeps every unit's high-water mark
        return {k: np.array(v, dtype=object if k in ("part", "shard", "source", "node") else np.int64)
                for k, v in rows.items()}

    def tokenize_batch(self, batch: pa.Table, rows: dict[str, list]) -> None:
        """Tokenize the batch once, pack it at every sequence length, write one shard per length (and
        add its counts to rows); the held-out documents (never trained on) are packed apart, at the
        first length only."""
        heldout = seeded_slice(batch.column("doc_id").to_pylist(), self.heldout_fraction, self.seed, "heldout")
        parts = [("train", ~heldout, self.output_dirs)]
        if self.heldout_dir is not None:
            first = min(self.output_dirs)
            parts.append(("heldout", heldout, {first: self.heldout_dir}))
        for part, selected, directories in parts:
            if not selected.any():
                continue
            documents = batch.filter(pa.array(selected)) if not selected.all() else batch
            ids, word_start, boundaries, doc_starts = self.tokenize(documents)
            doc_ids = documents.column("doc_id").to_numpy(zero_copy_only=False).astype(object)
            sources = documents.column("source").to_numpy(zero_copy_only=False)
            for seq_len, directory in directories.items():
                packed = self.pack(ids, word_start, boundaries, doc_starts, doc_ids, sources, seq_len)
                shard = self._write(packed, directory, seq_len)
                for name in sorted(set(packed["source"].tolist())):
                    of_source = packed["source"] == name
                    for key, value in (("part", part), ("seq_len", seq_len), ("shard", shard), ("source", name),
                                       ("sequences", int(of_source.sum())),
                                       ("tokens", int(packed["length"][of_source].sum())), ("node", self.node)):
                        rows[key].append(value)

    @staticmethod
    def _write(packed: dict[str, np.ndarray], directory: Path, seq_len: int) -> str:
        """One shard per batch, named by its content; written to a temporary name, then renamed."""
        digest = hashlib.sha1(packed["input_ids"].tobytes())
        digest.update(packed["doc_id"].astype(str).tobytes())
        name = f"part-{digest.hexdigest()[:20]}.parquet"
        columns = {k: pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), seq_len) if v.ndim == 2 else pa.array(v)
                   for k, v in packed.items()}
        temporary = temporary_path(directory / name)
        try:
            pq.write_table(pa.table(columns), temporary)
            os.replace(temporary, directory / name)
        except OSError as exc:  # full disk, read-only volume: say where, leave no partial file
            temporary.unlink(missing_ok=True)
            raise OSError(f"cannot write shard {directory / name}: {exc}") from exc
        return name

    def tokenize(self, batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Documents (text, sentence_starts) -> one token stream, its word-start flags, the stream
        positions where sentences start and where documents start."""
        texts = batch.column("text").to_pylist()
        starts = batch.column("sentence_starts").to_pylist()
        marked = [self._marked(t, s) for t, s in zip(texts, starts)]
        id_lists = [encoding.ids for begin in range(0, len(marked), ENCODE_CHUNK)  # small calls stay in cache
                    for encoding in self.backend.encode_batch_fast(marked[begin:begin + ENCODE_CHUNK],
                                                                   add_special_tokens=False)]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        stream = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int32, count=int(lengths.sum()))

        marker = stream == self.sep_id
        kept_before = np.concatenate([[0], np.cumsum(~marker)])  # stream position -> position without markers
        doc_starts = kept_before[np.concatenate([[0], np.cumsum(lengths)[:-1]])]
        boundaries = np.union1d(kept_before[:-1][marker], doc_starts)
        ids = stream[~marker]
        return ids, self.word_start[ids], boundaries, doc_starts

    def pack(self, ids, word_start, boundaries, doc_starts, doc_ids, sources, seq_len: int) -> dict[str, np.ndarray]:
        """The batch's token stream -> packed sequence arrays of seq_len positions."""
        rng = batch_rng(self.seed, f"{doc_ids[0] if len(doc_ids) else ''}:{seq_len}")
        args = (ids, word_start, boundaries, doc_starts, seq_len, self.cls_id, self.sep_id, rng)
        packed = pack_stream(*args) if self.packing == "stream" else pack_documents(*args, nsp=self.nsp)
        owner = packed.pop("doc_index")  # the document each sequence starts in
        return {"doc_id": doc_ids[owner], "source": sources[owner], **packed}


def sequences_dir(tokenize_output: Path, long_seq_len: int | None = None) -> Path:
    """Where shards of one length live: `sequences/` at tokenize.seq_len, `sequences-<L>/` at the long length L."""
    return tokenize_output / ("sequences" if long_seq_len is None else f"sequences-{long_seq_len}")


def heldout_dir(tokenize_output: Path) -> Path:
    """The held-out documents' sequences (at tokenize.seq_len): pretraining's held-out MLM loss."""
    return tokenize_output / "heldout"


def _length_stats(written, seq_len: int, part: str = "train") -> dict:
    """Sequences, tokens, fill and tokens per source of the shards of one length (and part)."""
    written = written[(written["seq_len"] == seq_len) & (written["part"] == part)]
    sequences, tokens = int(written["sequences"].sum()), int(written["tokens"].sum())
    return {
        "sequences": sequences,
        "tokens": tokens,
        "fill_ratio": tokens / max(1, sequences * seq_len),
        "tokens_per_source": {k: int(v) for k, v in written.groupby("source")["tokens"].sum().items()},
        "shards": int(written["shard"].nunique()),
    }


def run_tokenize(config: TokenizeConfig, documents_dir: Path, tokenizer_dir: Path, output: Path) -> dict:
    directories = {config.seq_len: sequences_dir(output)}
    if config.long_seq_len:
        directories[config.long_seq_len] = sequences_dir(output, config.long_seq_len)
    held_out = heldout_dir(output) if config.heldout_fraction > 0 else None
    for directory in [*directories.values(), *([held_out] if held_out else [])]:
        directory.mkdir(parents=True, exist_ok=True)
    only_new = config.documents == "new"
    per_source, sentences = document_counts(documents_dir, only_new=only_new)
    if not per_source:
        raise ValueError(f"tokenize: no {'new ' if only_new else ''}documents in {documents_dir}"
                         + (" (the ingest run parsed no new file with a document in it)" if only_new else ""))
    # The actors read their own row groups: a unit's batches, and the shards named by their content,
    # are the same in every run, and a unit retried after its actor died rewrites the same shards.
    packed = units_dataset(row_group_units(documents_dir)).map_batches(
        TokenizePacker,
        fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir), "seed": config.seed,
                               "batch_size": config.batch_size, "packing": config.packing, "nsp": config.nsp,
                               "output_dirs": {k: str(v) for k, v in directories.items()},
                               "heldout_dir": str(held_out) if held_out else None,
                               "heldout_fraction": config.heldout_fraction, "only_new": only_new},
        batch_size=1,
        batch_format="pyarrow",
        compute=actor_pool(config.tokenizer_actors),
        num_cpus=1,
    )
    written = capped(packed).to_pandas()  # a few rows per shard: (seq_len, shard, source, sequences, tokens)
    # A batch retried after a lost actor wrote its shard again under the same name: count shards once,
    # and drop the temporary file the lost actor may have left half-written (readers skip dot files).
    written = written.drop_duplicates(["part", "seq_len", "shard", "source"])
    for directory in [*directories.values(), *([held_out] if held_out else [])]:
        for orphan in directory.glob(".part-*.tmp"):
            orphan.unlink()
    stats = {"packing": config.packing, "documents_from": config.documents, "documents": sum(per_source.values()),
             "sentences": sentences, "nodes": int(written["node"].nunique()), "seq_len": config.seq_len,
             **_length_stats(written, config.seq_len)}
    if config.long_seq_len:
        stats["long"] = {"seq_len": config.long_seq_len, **_length_stats(written, config.long_seq_len)}
    if held_out:
        held = _length_stats(written, config.seq_len, "heldout")
        stats["heldout"] = {"fraction": config.heldout_fraction, "sequences": held["sequences"],
                            "tokens": held["tokens"]}
    (output / "stats.json").write_text(json.dumps(stats, indent=2))
    metrics = {f"tokenize/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
    for part in ("long", "heldout"):
        numbers = {k: v for k, v in stats.get(part, {}).items() if isinstance(v, (int, float))}
        metrics.update({f"tokenize/{part}_{k}": v for k, v in numbers.items()})
    return metrics
