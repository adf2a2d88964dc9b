"""Stage tag (optional, `tag.dataset`): a fine-tuned NER model over every ingested document (Ray Data)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bioray.config import TagConfig, WorkflowConfig
from bioray.pipeline.stages.arms import Coordinate, registered_arm
from bioray.pipeline.stages.base import Node, Stage, StageEnv
from bioray.tasks import catalog


class TagParams(BaseModel):
    tag: TagConfig
    max_length: int  # the tagging model's fine-tuning window
    metric: str  # the entry's (Task.metric): of a learning-rate grid, the run best on dev by it tags


class Tag(Stage):
    kind = "tag"
    Params = TagParams
    headline = ("tag/documents", "tag/entities")
    help = "Batch inference: tag the ingested documents with a fine-tuned NER model (Ray Data)."

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        if not config.tag.dataset:
            return []
        dataset = next(d for d in config.finetune.datasets if d.name == config.tag.dataset)
        seed = config.tag.seed if config.tag.seed is not None else config.finetune.seeds[0]
        arm = registered_arm(config)  # tagging uses the evaluated model of the registered encoder
        at = Coordinate(arm=arm.name, dataset=dataset.name, fold=0 if dataset.folds else None, seed=seed)
        evaluation = next(n for n in upstream if n.kind == "evaluate" and n.params.at == at)
        return [Node(f"tag/{dataset.name}", self, {"runs": evaluation.needs["runs"], "corpus": "ingest"},
                     TagParams(tag=config.tag, max_length=config.finetune.for_dataset(dataset).max_length,
                               metric=catalog.task_for(dataset).metric))]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.pipeline.stages.evaluate import choose
        from bioray.tasks.tagging import run_tagging

        _, tuned = choose(inputs["runs"], node.params.metric)
        model = tuned.model
        stats = run_tagging(model, inputs["corpus"].documents, output, actors=node.params.tag.actors,
                            max_length=node.params.max_length, batch_size=node.params.tag.batch_size)
        return {"tag/documents": stats["documents"], "tag/entities": stats["entities"]}
