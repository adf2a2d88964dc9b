"""Stage ingest: raw files -> deduplicated, sentence-split documents Parquet (Ray tasks)."""

from __future__ import annotations

from pathlib import Path

from bioray.config import IngestConfig, WorkflowConfig
from bioray.corpus.files import list_source_files
from bioray.pipeline.stages.arms import own_corpus_arms
from bioray.pipeline.stages.base import Node, Stage, StageEnv, StageOutput


class IngestOutput(StageOutput):
    @property
    def documents(self) -> Path:
        return self.path / "documents"


class Ingest(Stage):
    kind = "ingest"
    headline = ("ingest/documents", "ingest/quarantined_records")
    help = "Raw files -> deduplicated, sentence-split documents Parquet (Ray tasks)."
    output = IngestOutput
    Params = IngestConfig
    volatile = ("manifest.json",)  # where its input files were read (absolute paths, mtimes)
    incremental = True  # NLM's update files: parse only the new ones, apply them to an earlier output

    def nodes(self, config: WorkflowConfig, upstream: list[Node]) -> list[Node]:
        own = [Node(f"ingest/{arm.name}", self, {}, arm.corpus, _files(config, arm.corpus))
               for arm in own_corpus_arms(config)]
        if config.ingest is None or not (any(a.needs_corpus for a in config.arms) or config.tag.dataset):
            return own
        return [Node("ingest", self, {}, config.ingest, _files(config, config.ingest)), *own]

    def run(self, node: Node, inputs: dict, output: Path, env: StageEnv) -> dict:
        from bioray.data.ingest import run_ingest

        return run_ingest(node.params, env.data_root, output, list(env.earlier))


def _files(config: WorkflowConfig, corpus: IngestConfig) -> tuple[str, ...]:
    return tuple(str(p) for s in corpus.sources for p in list_source_files(config.data_path(s.path), s.format))
