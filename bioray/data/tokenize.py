"""Tokenize stage: documents Parquet -> packed token sequences in balanced Parquet shards.

Tokenizers are stateful, so they live in Ray Data actors (ActorPoolStrategy); each batch of
documents is tokenized whole in one fast-tokenizer call, cut at the sentence starts, then packed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from ray.data import ActorPoolStrategy
from transformers import AutoTokenizer

from bioray.config import TokenizeConfig
from bioray.data.ingest import document_counts
from bioray.data.pack import Sentence, pack_document, pack_stream


class TokenizePacker:
    """Ray Data actor: holds one tokenizer, turns document batches into packed sequences."""

    def __init__(self, tokenizer_dir: str, seq_len: int, seed: int, packing: str = "stream"):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per actor: Ray provides the parallelism
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.word_start = np.array([not p.startswith("##") for p in pieces], dtype=np.int8)  # by token id
        self.seq_len = seq_len
        self.seed = seed
        self.packing = packing

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        # Whole documents in one Rust call (a call per sentence costs more than the tokenizing), then
        # cut each token stream at the sentence starts by character offset.
        encodings = self.tokenizer.backend_tokenizer.encode_batch(list(batch["text"]), add_special_tokens=False)
        per_doc: list[list[Sentence]] = []
        for encoding, starts in zip(encodings, batch["sentence_starts"]):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if not len(ids):
                per_doc.append([])
                continue
            token_starts = np.asarray(encoding.offsets, dtype=np.int64)[:, 0]
            cuts = np.unique(np.searchsorted(token_starts, np.asarray(starts, dtype=np.int64)))
            cuts = cuts[(cuts > 0) & (cuts < len(ids))]
            flags = self.word_start[ids]
            per_doc.append([Sentence(piece.tolist(), flag.tolist())
                            for piece, flag in zip(np.split(ids, cuts), np.split(flags, cuts))])

        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids, sources = list(batch["doc_id"]), list(batch["source"])
        if self.packing == "stream":
            rng = random.Random(f"{self.seed}:{ids[0] if ids else ''}")  # deterministic for the same batch
            packed = pack_stream(per_doc, self.seq_len, cls_id, sep_id, rng)
        else:
            packed = [(i, seq) for i, sentences in enumerate(per_doc)  # rng per document, whatever the batching
                      for seq in pack_document(sentences, self.seq_len, cls_id, sep_id, random.Random(f"{self.seed}:{ids[i]}"))]
        return pd.DataFrame({
            "doc_id": [ids[i] for i, _ in packed],  # the document the sequence starts in
            "source": [sources[i] for i, _ in packed],
            "input_ids": [seq.input_ids for _, seq in packed],
            "token_type_ids": [seq.token_type_ids for _, seq in packed],
            "word_start": [seq.word_start for _, seq in packed],
            "length": [seq.length for _, seq in packed],
        })


def run_tokenize(config: TokenizeConfig, documents_dir: Path, tokenizer_dir: Path, output: Path) -> dict:
    documents = ray.data.read_parquet(str(documents_dir), columns=["doc_id", "source", "text", "sentence_starts"])
    sequences = documents.map_batches(
        TokenizePacker,
        fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir), "seq_len": config.seq_len, "seed": config.seed,
                               "packing": config.packing},
        batch_size=config.batch_size,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=config.tokenizer_actors),
    )
    # Equal shards, one stream per training worker; sequences are shuffled when training reads them
    # (a local shuffle buffer), so no global shuffle is paid here.
    sequences = sequences.repartition(config.num_shards)
    sequences.write_parquet(str(output / "sequences"), min_rows_per_file=1)

    written = ray.data.read_parquet(str(output / "sequences"), columns=["doc_id", "source", "length"])
    lengths = written.to_pandas()
    per_source, sentences = document_counts(documents_dir)
    stats = {
        "packing": config.packing,
        "documents": sum(per_source.values()),
        "sentences": sentences,
        "sequences": int(len(lengths)),
        "tokens": int(lengths["length"].sum()),
        "seq_len": config.seq_len,
        "fill_ratio": float(lengths["length"].sum() / max(1, len(lengths) * config.seq_len)),
        "tokens_per_source": {k: int(v) for k, v in lengths.groupby("source")["length"].sum().items()},
        "shards": len(list((output / "sequences").glob("*.parquet"))),
    }
    (output / "stats.json").write_text(json.dumps(stats, indent=2))
    return {f"tokenize/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
