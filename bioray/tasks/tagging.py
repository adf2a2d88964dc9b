"""Batch inference: a fine-tuned NER model over a documents Parquet (the ingest stage's output, all
of PubMed if need be) with Ray Data actors, written as an entities Parquet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from bioray.data.row_groups import actor_pool, batches, read_unit, row_group_units, units_dataset
from bioray.data.streaming import parquet_dataset, release_memory

COLUMNS = ("doc_id", "source", "start", "end", "text", "type", "score")


class EntityTagger:
    """Ray Data actor: holds one model; documents in, one row per entity out (document offsets)."""

    def __init__(self, model_dir: str, max_length: int, batch_size: int, documents_per_batch: int = 64):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForTokenClassification.from_pretrained(model_dir, use_safetensors=True)
        self.max_length, self.batch_size, self.documents_per_batch = max_length, batch_size, documents_per_batch

    def __call__(self, units: pa.Table) -> dict:
        """Tag each unit's documents, a few at a time: one row per entity found."""
        tagged = [self.tag(documents.to_pydict())
                  for unit in units.to_pylist()
                  for documents in batches(read_unit(unit), self.documents_per_batch)]
        entities = {column: np.concatenate([rows[column] for rows in tagged]) if tagged else np.array([])
                    for column in COLUMNS}
        del tagged
        release_memory(collect_cycles=False)  # else the actor keeps every unit's high-water mark
        return entities

    def tag(self, batch: dict) -> dict:
        from bioray.tasks.inference import tag_texts

        pieces, owners = [], []  # sentences, each with its document row and offset
        for row, (text, starts) in enumerate(zip(batch["text"], batch["sentence_starts"])):
            bounds = [int(s) for s in starts] or [0]
            for begin, end in zip(bounds, bounds[1:] + [len(text)]):
                pieces.append(text[begin:end])
                owners.append((row, begin))
        rows = {column: [] for column in COLUMNS}
        for (row, offset), entities in zip(owners, tag_texts(self.model, self.tokenizer, pieces, self.max_length,
                                                             self.batch_size)):
            for entity in entities:
                rows["doc_id"].append(batch["doc_id"][row])
                rows["source"].append(batch["source"][row])
                rows["start"].append(entity["start"] + offset)
                rows["end"].append(entity["end"] + offset)
                rows["text"].append(entity["text"])
                rows["type"].append(entity["type"])
                rows["score"].append(entity["score"])
        return {k: np.array(v, dtype=object if k in ("doc_id", "source", "text", "type") else
                            (np.float32 if k == "score" else np.int64)) for k, v in rows.items()}


def run_tagging(model_dir: Path, documents_dir: Path, output: Path, actors: int = 1, max_length: int = 128,
                batch_size: int = 32) -> dict:
    """Tag every document; entities go to output/entities/*.parquet, counts to output/stats.json."""
    units = row_group_units(documents_dir)
    entities = units_dataset(units).map_batches(
        EntityTagger, fn_constructor_kwargs={"model_dir": str(model_dir), "max_length": max_length,
                                             "batch_size": batch_size},
        batch_size=1, batch_format="pyarrow", compute=actor_pool(actors), num_cpus=1)
    entities.write_parquet(str(output / "entities"))
    table = parquet_dataset(str(output / "entities")).to_table(columns=["type"]).to_pandas()
    stats = {"documents": sum(unit["rows"] for unit in units), "entities": len(table),
             "entities_per_type": {k: int(v) for k, v in table["type"].value_counts().items()}}
    (output / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
