"""Stage pretrain: MLM (+ optional NSP) with Ray Train + DeepSpeed ZeRO; exports a Hugging Face model."""

from __future__ import annotations

import json
from pathlib import Path

from bioray.config import WorkflowConfig
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput, checkpoint_files


class PretrainOutput(StageOutput):
    @property
    def model(self) -> Path:
        """The encoder as a Hugging Face model directory (weights, config, tokenizer)."""
        return self.path / "model"


class Pretrain(Stage):
    kind = "pretrain"
    help = "MLM (+ optional NSP) pretraining with Ray Train + DeepSpeed ZeRO; exports an HF model."
    output = PretrainOutput

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        return [Node("pretrain", self, ("tokenize", "vocab"), config.pretrain,
                     checkpoint_files(config, config.pretrain.init_checkpoint))]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.plots import plot_history
        from bioray.train.pretrain import run_pretrain

        config = node.params
        tokenized = inputs["tokenize"]
        init = env.data_path(config.init_checkpoint) if config.init_checkpoint else None
        metrics = run_pretrain(config, sequences_dir=tokenized.sequences, long_sequences_dir=tokenized.long_sequences,
                               tokenizer_dir=inputs["vocab"].tokenizer, output=output, storage=env.train_storage,
                               run_name=f"pretrain-{env.key}", context=env.context,
                               init_checkpoint=init)
        curves = ["pretrain/loss", "pretrain/mlm_accuracy"] + (["pretrain/nsp_accuracy"] if config.nsp else [])
        plot_history(json.loads((output / "history.json").read_text()), curves, output / "loss_curve.png",
                     title="Pretraining (MLM" + (" + NSP)" if config.nsp else ")"))
        return metrics
