"""Stage pretrain: MLM (+ optional NSP) with Ray Train + DeepSpeed ZeRO; exports a Hugging Face model.

The workflow's own pretraining is `pretrain`; an encoder arm that continues a checkpoint on the corpus
(`continue_pretraining`) gets `pretrain/<arm>`, from the checkpoint with its own vocabulary; so does an arm
pretrained on a corpus of its own (`corpus`), with the same recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from bioray.config import PretrainConfig, WorkflowConfig
from bioray.pipeline.stages.arms import continued_arms, fraction_step, own_corpus_arms, uses_own_pretraining
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput, checkpoint_files, validated


class PretrainOutput(StageOutput):
    @property
    def model(self) -> Path:
        """The encoder as a Hugging Face model directory (weights, config, tokenizer)."""
        return self.path / "model"


class Pretrain(Stage):
    kind = "pretrain"
    headline = ("pretrain/final_loss", "pretrain/final_heldout_loss")
    help = "MLM (+ optional NSP) pretraining with Ray Train + DeepSpeed ZeRO; exports an HF model."
    output = PretrainOutput
    Params = PretrainConfig
    volatile = ("history.json",)  # its rows hold throughput and ETA beside the losses

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        nodes = []
        if uses_own_pretraining(config):
            curve = {fraction_step(config, a.at_fraction) for a in config.arms if a.at_fraction not in (None, 1)}
            params = validated(config.pretrain, export_steps=sorted({*config.pretrain.export_steps, *curve}))
            nodes.append(Node("pretrain", self, {"tokens": "tokenize", "vocab": "vocab"}, params,
                              checkpoint_files(config, config.pretrain.init_checkpoint)))
        for arm in own_corpus_arms(config):  # the same recipe and budget on another corpus
            nodes.append(Node(f"pretrain/{arm.name}", self, {"tokens": f"tokenize/{arm.name}",
                                                             "vocab": f"vocab/{arm.name}"}, config.pretrain,
                              checkpoint_files(config, config.pretrain.init_checkpoint)))
        for arm in continued_arms(config):
            own = {"steps": arm.steps, "warmup_steps": min(config.pretrain.warmup_steps, arm.steps // 5)} \
                if arm.steps else {}
            own.update({"lr": arm.pretrain_lr} if arm.pretrain_lr else {})
            steps = arm.steps or config.pretrain.steps
            own["export_steps"] = sorted({max(1, round(f * steps)) for f in arm.export_fractions if f < 1})
            params = validated(config.pretrain, init_checkpoint=arm.checkpoint, **own)
            nodes.append(Node(f"pretrain/{arm.name}", self, {"tokens": f"tokenize/{arm.name}",
                                                             "vocab": f"vocab/{arm.name}"}, params,
                              checkpoint_files(config, arm.checkpoint)))
        return nodes

    def nondeterministic(self, node: Node) -> str | None:
        if node.params.use_gpu and not node.params.deterministic:
            return "GPU kernels (cuBLAS, atomic adds) without pretrain.deterministic"
        return None

    def training_workers(self, node: Node) -> int:
        return node.params.num_workers

    def preemption_grace(self, node: Node) -> float:
        return node.params.preemption_grace_s

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from transformers import AutoTokenizer

        from bioray.data.unigram import log_prior, unigram_counts, unigram_loss
        from bioray.model.checkpoint import has_mlm_head
        from bioray.plots import plot_history
        from bioray.train.pretrain import run_pretrain

        config = node.params
        tokenized, tokenizer_dir = inputs["tokens"], inputs["vocab"].tokenizer
        init = env.data_path(config.init_checkpoint) if config.init_checkpoint else None
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        counts = unigram_counts(tokenized.sequences, len(tokenizer), tokenizer.all_special_ids)
        bias = log_prior(counts) if config.output_bias_init == "unigram" and (
            init is None or not has_mlm_head(init)) else None
        metrics = run_pretrain(config, sequences_dir=tokenized.sequences, long_sequences_dir=tokenized.long_sequences,
                               heldout_dir=tokenized.heldout, tokenizer_dir=tokenizer_dir, output=output,
                               storage=env.train_storage, storage_endpoint=env.storage_endpoint,
                               run_name=f"{node.name.replace('/', '-')}-{env.key}",
                               context=env.context, init_checkpoint=init, exports_dir=env.scratch(node.name),
                               output_bias=bias, progress_file=env.progress_file)
        metrics["pretrain/unigram_loss"] = unigram_loss(counts)  # the plateau a context-blind model reaches
        curves = ["pretrain/loss", "pretrain/mlm_accuracy"] + (["pretrain/nsp_accuracy"] if config.nsp else [])
        if "pretrain/final_heldout_loss" in metrics:
            curves.append("pretrain/heldout_loss")
        plot_history(json.loads((output / "history.json").read_text()), curves, output / "loss_curve.png",
                     title="Pretraining (MLM" + (" + NSP)" if config.nsp else ")"))
        return metrics
