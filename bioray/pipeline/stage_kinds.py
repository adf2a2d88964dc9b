"""The stage kinds of a workflow, in order: adding a stage kind is one module under
bioray/pipeline/stages/ and one entry here (or, outside bioray, `register_stage` in a workflow's plugin)."""

from __future__ import annotations

from bioray.pipeline.stages.base import Stage
from bioray.pipeline.stages.encoder import Encoder
from bioray.pipeline.stages.evaluate import Evaluate
from bioray.pipeline.stages.finetune import Finetune
from bioray.pipeline.stages.heldout import Heldout
from bioray.pipeline.stages.ingest import Ingest
from bioray.pipeline.stages.pretrain import Pretrain
from bioray.pipeline.stages.register import Register
from bioray.pipeline.stages.register_task import RegisterTask
from bioray.pipeline.stages.report import Report
from bioray.pipeline.stages.tag import Tag
from bioray.pipeline.stages.tokenize import Tokenize
from bioray.pipeline.stages.vocab import Vocab

STAGES: list[Stage] = [Ingest(), Vocab(), Tokenize(), Pretrain(), Encoder(), Heldout(), Finetune(), Evaluate(),
                       Report(), Tag(), RegisterTask(), Register()]


def register_stage(stage: Stage) -> None:
    """Add a stage kind from outside bioray, planned after the built-in ones (its `nodes` sees theirs)."""
    if stage.kind in {s.kind for s in STAGES}:
        raise ValueError(f"stage kind {stage.kind!r} is already registered")
    STAGES.append(stage)
