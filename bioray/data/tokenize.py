"""Tokenize stage: documents Parquet -> packed token sequences in balanced Parquet shards.

Tokenizers are stateful, so they live in Ray Data actors (ActorPoolStrategy); each batch of
documents is tokenized sentence by sentence in one fast-tokenizer call, then packed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pandas as pd
import ray
from ray.data import ActorPoolStrategy
from transformers import AutoTokenizer

from bioray.config import TokenizeConfig
from bioray.data.pack import Sentence, pack_document


class TokenizePacker:
    """Ray Data actor: holds one tokenizer, turns document batches into packed sequences."""

    def __init__(self, tokenizer_dir: str, seq_len: int, seed: int):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per actor: Ray provides the parallelism
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.seq_len = seq_len
        self.seed = seed

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts, owners = [], []
        for row, (text, starts, ends) in enumerate(zip(batch["text"], batch["sentence_starts"], batch["sentence_ends"])):
            for s, e in zip(starts, ends):
                texts.append(text[s:e])
                owners.append(row)
        encoded = self.tokenizer(texts, add_special_tokens=False) if texts else {"input_ids": []}
        per_doc: list[list[Sentence]] = [[] for _ in range(len(batch))]
        for i, ids in enumerate(encoded["input_ids"]):
            word_ids = encoded.word_ids(i)
            starts = [int(w is not None and (j == 0 or word_ids[j - 1] != w)) for j, w in enumerate(word_ids)]
            per_doc[owners[i]].append(Sentence(ids, starts))

        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        rows = {"doc_id": [], "source": [], "input_ids": [], "token_type_ids": [], "word_start": [], "length": []}
        for doc_id, source, sentences in zip(batch["doc_id"], batch["source"], per_doc):
            rng = random.Random(f"{self.seed}:{doc_id}")  # deterministic per document, whatever the batching
            for seq in pack_document(sentences, self.seq_len, cls_id, sep_id, rng):
                rows["doc_id"].append(doc_id)
                rows["source"].append(source)
                rows["input_ids"].append(seq.input_ids)
                rows["token_type_ids"].append(seq.token_type_ids)
                rows["word_start"].append(seq.word_start)
                rows["length"].append(seq.length)
        return pd.DataFrame(rows)


def run_tokenize(config: TokenizeConfig, documents_dir: Path, tokenizer_dir: Path, output: Path) -> dict:
    documents = ray.data.read_parquet(str(documents_dir), columns=["doc_id", "source", "text", "sentence_starts", "sentence_ends"])
    sequences = documents.map_batches(
        TokenizePacker,
        fn_constructor_kwargs={"tokenizer_dir": str(tokenizer_dir), "seq_len": config.seq_len, "seed": config.seed},
        batch_size=config.batch_size,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=config.tokenizer_actors),
    )
    # Shuffle then split into equal shards, so each training worker gets a balanced stream.
    sequences = sequences.random_shuffle(seed=config.seed).repartition(config.num_shards)
    sequences.write_parquet(str(output / "sequences"), min_rows_per_file=1)

    written = ray.data.read_parquet(str(output / "sequences"), columns=["doc_id", "source", "length"])
    lengths = written.to_pandas()
    stats = {
        "documents": int(lengths["doc_id"].nunique()),
        "sequences": int(len(lengths)),
        "tokens": int(lengths["length"].sum()),
        "seq_len": config.seq_len,
        "fill_ratio": float(lengths["length"].sum() / max(1, len(lengths) * config.seq_len)),
        "tokens_per_source": {k: int(v) for k, v in lengths.groupby("source")["length"].sum().items()},
        "shards": len(list((output / "sequences").glob("*.parquet"))),
    }
    (output / "stats.json").write_text(json.dumps(stats, indent=2))
    return {f"tokenize/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
