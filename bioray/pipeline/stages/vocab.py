"""Stage vocab: a WordPiece vocabulary trained on a sample of the documents, or an initial checkpoint's."""

from __future__ import annotations

from pathlib import Path

from bioray.config import VocabConfig, WorkflowConfig
from bioray.pipeline.stages.arms import continued_arms, own_corpus_arms
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput, checkpoint_files, validated


class VocabOutput(StageOutput):
    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer"


class Vocab(Stage):
    kind = "vocab"
    headline = ("vocab/size",)
    help = "Train the WordPiece vocabulary (or take an initial checkpoint's)."
    output = VocabOutput
    Params = VocabConfig
    num_cpus = 1

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        nodes = []
        if any(arm.needs_corpus and not arm.continue_pretraining for arm in config.arms):
            nodes.append(Node("vocab", self, {"corpus": "ingest"}, config.vocab,
                              checkpoint_files(config, config.vocab.init_checkpoint)))
        for arm in own_corpus_arms(config):  # a vocabulary of its own corpus, with the same settings
            nodes.append(Node(f"vocab/{arm.name}", self, {"corpus": f"ingest/{arm.name}"}, config.vocab,
                              checkpoint_files(config, config.vocab.init_checkpoint)))
        for arm in continued_arms(config):  # continued pretraining keeps the checkpoint's vocabulary
            own = validated(config.vocab, init_checkpoint=arm.checkpoint)
            nodes.append(Node(f"vocab/{arm.name}", self, {"corpus": "ingest"}, own,
                              checkpoint_files(config, arm.checkpoint)))
        return nodes

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.data.vocab import run_vocab

        init = env.data_path(node.params.init_checkpoint) if node.params.init_checkpoint else None
        return run_vocab(node.params, inputs["corpus"].documents, output, init)
