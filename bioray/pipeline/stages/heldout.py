"""Stage heldout: the domain matrix. Every encoder arm is scored on held-out text of every corpus of the
workflow (its own corpus and the workflow's, e.g. biomedical and general): whole-word masked-LM loss per
word, comparable across vocabularies (bioray.train.heldout_mlm). On when evaluate.heldout_words > 0."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from bioray.config import WorkflowConfig
from bioray.metric_names import heldout_metric
from bioray.pipeline.stages.arms import corpora, encoder_source
from bioray.pipeline.stages.base import Node, Stage, StageEnv


class HeldoutParams(BaseModel):
    folder: str  # the encoder's folder in its stage's output
    corpora: list[str]  # the labels of the corpora, in the order of the `corpora` role
    words: int
    seq_len: int
    fraction: float  # tokenize.heldout_fraction and seed: the documents no pretraining of a corpus saw
    seed: int


class Heldout(Stage):
    kind = "heldout"
    help = "Score every encoder's whole-word masked-LM loss on each corpus's held-out text (the domain matrix)."
    Params = HeldoutParams
    num_cpus = 1
    headline = ("heldout/*/loss_per_word",)

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        found = corpora(config, upstream)
        if not config.evaluate.heldout_words or not found:
            return []
        nodes = []
        for arm in config.arms:
            source, folder = encoder_source(config, arm)
            params = HeldoutParams(folder=folder, corpora=list(found), words=config.evaluate.heldout_words,
                                   seq_len=config.tokenize.seq_len, fraction=config.tokenize.heldout_fraction,
                                   seed=config.tokenize.seed)
            nodes.append(Node(f"heldout/{arm.name}", self, {"encoder": source, "corpora": tuple(found.values())},
                              params))
        return nodes

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.model.checkpoint import has_mlm_head
        from bioray.train.heldout_mlm import heldout_documents, score

        params: HeldoutParams = node.params
        model = inputs["encoder"].path / params.folder
        if not has_mlm_head(model):  # a sentence-embedding checkpoint: no masked-LM loss to speak of
            (output / "matrix.json").write_text(json.dumps({"matrix": {}, "curve": [], "no_mlm_head": True}))
            return {}
        held = {label: heldout_documents(corpus.documents, params.fraction, params.seed, params.words)
                for label, corpus in zip(params.corpora, inputs["corpora"].values())}
        matrix = score(model, held, params.seq_len, params.seed)
        # the pretraining's exports on the way (pretrain.export_steps): how the loss on each corpus moved
        exports = sorted(inputs["encoder"].path.glob("model-step-*"), key=lambda p: int(p.name.rpartition("-")[2]))
        curve = [{"step": int(export.name.rpartition("-")[2]), "corpus": label, **row}
                 for export in exports if params.folder == "model"
                 for label, row in score(export, held, params.seq_len, params.seed).items()]
        (output / "matrix.json").write_text(json.dumps({"matrix": matrix, "curve": curve}, indent=2))
        for point in curve:  # a metric history per corpus, beside the final value the runner logs
            env.context.client.log_metric(env.context.run_id, heldout_metric(point["corpus"], "loss_per_word_at_step"),
                                          point["loss_per_word"], step=point["step"])
        return {heldout_metric(label, name): value for label, row in matrix.items() for name, value in row.items()}
