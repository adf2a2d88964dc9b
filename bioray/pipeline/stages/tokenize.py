"""Stage tokenize: documents -> packed token sequences in Parquet shards, at one or two lengths (Ray Data)."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.config import TokenizeConfig, WorkflowConfig
from bioray.pipeline.stages.arms import continued_arms, own_corpus_arms, uses_own_pretraining
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput


class TokenizeOutput(StageOutput):
    @property
    def sequences(self) -> Path:
        """The shards at tokenize.seq_len."""
        from bioray.data.tokenize import sequences_dir

        return sequences_dir(self.path)

    @property
    def long_sequences(self) -> Path | None:
        """The shards at tokenize.long_seq_len (pretraining's long phase), when there are any."""
        from bioray.data.tokenize import sequences_dir

        long = json.loads((self.path / "stats.json").read_text()).get("long")
        return sequences_dir(self.path, long["seq_len"]) if long else None

    @property
    def heldout(self) -> Path | None:
        """The held-out documents' sequences (never trained on), when tokenize.heldout_fraction > 0 and
        the fraction caught a document (an incremental run over a few new documents may hold none out)."""
        from bioray.data.tokenize import heldout_dir

        directory = heldout_dir(self.path)
        return directory if directory.is_dir() and any(directory.glob("*.parquet")) else None


class Tokenize(Stage):
    kind = "tokenize"
    headline = ("tokenize/tokens", "tokenize/fill_ratio")
    help = "Documents -> packed token sequences in Parquet shards, one or two lengths (Ray Data)."
    output = TokenizeOutput
    Params = TokenizeConfig

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        pairs = [("vocab", "ingest")] if uses_own_pretraining(config) else []  # (vocabulary, corpus)
        pairs += [(f"vocab/{arm.name}", "ingest") for arm in continued_arms(config)]
        pairs += [(f"vocab/{arm.name}", f"ingest/{arm.name}") for arm in own_corpus_arms(config)]
        return [Node("tokenize" + vocab.removeprefix("vocab"), self, {"vocab": vocab, "corpus": corpus},
                     config.tokenize) for vocab, corpus in pairs]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.data.tokenize import run_tokenize

        return run_tokenize(node.params, inputs["corpus"].documents, inputs["vocab"].tokenizer, output)
