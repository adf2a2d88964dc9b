"""Stage encoder: an arm's encoder that no pretraining of this workflow makes: a randomly initialised
model (the no-pretraining baseline), or an existing checkpoint used as it is (a general-domain model,
BioBERT, PubMedBERT: bring your own). The output is a Hugging Face folder with safetensors weights."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import ModelConfig, WorkflowConfig
from bioray.pipeline.stages.arms import encoder_source
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput, checkpoint_files


class EncoderParams(BaseModel):
    checkpoint: str | None = None  # an existing checkpoint; else a random initialisation:
    shape: ModelConfig | None = None
    seed: int = 0


class EncoderOutput(StageOutput):
    @property
    def model(self) -> Path:
        return self.path / "model"


class Encoder(Stage):
    kind = "encoder"
    help = "An encoder arm's starting point: a random initialisation, or an existing checkpoint as it is."
    output = EncoderOutput
    Params = EncoderParams

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        nodes = []
        for arm in config.arms:
            name, _ = encoder_source(config, arm)
            if not name.startswith("encoder/"):
                continue
            if arm.source == "random":  # the vocab stage's vocabulary, pretrain.model's shape
                nodes.append(Node(name, self, {"vocab": "vocab"}, EncoderParams(shape=config.pretrain.model,
                                                                                  seed=arm.seed)))
            else:
                nodes.append(Node(name, self, {}, EncoderParams(checkpoint=arm.checkpoint),
                                  checkpoint_files(config, arm.checkpoint)))
        return nodes

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.model.checkpoint import copy_checkpoint, random_encoder

        params: EncoderParams = node.params
        if params.checkpoint is not None:
            return copy_checkpoint(env.data_path(params.checkpoint), output / "model")
        return random_encoder(inputs["vocab"].tokenizer, params.shape.model_dump(), params.seed, output / "model")
