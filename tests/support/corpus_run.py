"""Ingest + tokenize of a corpus directory as one Ray driver: on a fresh local Ray, or on the cluster at
--address. Run as a script by the two-node data-path test (one driver per Ray session)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.dataset as pads
import ray

from bioray.bench.tokenize import bench_sources
from bioray.config import IngestConfig, TokenizeConfig
from bioray.data.ingest import run_ingest
from bioray.data.tokenize import run_tokenize
from bioray.data.vocab import train_wordpiece


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True, help="trained here first when missing")
    parser.add_argument("--address", default=None)
    args = parser.parse_args()
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    (args.output / "ingest").mkdir(parents=True)
    (args.output / "tokenize").mkdir()
    ingest = run_ingest(IngestConfig(sources=bench_sources(args.data)), args.data, args.output / "ingest")
    documents = args.output / "ingest" / "documents"
    if not args.tokenizer.exists():
        texts = pads.dataset(str(documents), format="parquet").to_table(columns=["text"]).column("text").to_pylist()
        train_wordpiece(texts, 4000, lowercase=False, min_frequency=2).save_pretrained(str(args.tokenizer))
    tokenize = run_tokenize(TokenizeConfig(tokenizer_actors=4, batch_size=128), documents, args.tokenizer,
                            args.output / "tokenize")
    print(json.dumps({**ingest, **tokenize}))


if __name__ == "__main__":
    main()
