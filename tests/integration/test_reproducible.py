"""Same workflow, same result: the tiny workflow run twice in two fresh workdirs (the second with two
tokenizer actors instead of one, parallelism that is no part of what a stage makes) gives every stage
the same content digest, and the same test F1 to the last digit; a stage forced again says whether it
made the same output. The default tier runs the corpus stages (ingest, vocab, tokenize); the extended
tier every stage, pretraining on two workers. (Pretraining's own determinism is also the exact-resume
tests' standard; fine-tuning's, tests/integration/test_finetune_workers.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bioray.config import load_workflow
from bioray.metric_names import STAGE_REPRODUCED
from bioray.pipeline.digest import read_digest
from bioray.pipeline.stage_state import stage_status
from tests.support.workflows import NCBI, run_in_process, small_workflow, write_workflow


def _tiny(tmp_path, data_root, name: str, actors: int, pretrain_workers: int):
    tree = small_workflow(tmp_path / name / "work", data_root, name=name, registry={"enabled": False},
                          finetune={"datasets": [{**NCBI, "max_train_examples": 100}], "epochs": 1,
                                    "max_length": 64, "batch_size": 16})
    tree["tokenize"]["tokenizer_actors"] = actors
    tree["pretrain"].update(num_workers=pretrain_workers, micro_batch_size=8 // pretrain_workers)
    if pretrain_workers > 1:  # the extended variant: a random-init arm beside the pretrained one
        tree["encoders"] = [{"name": "scratch"}, {"name": "random", "source": "random", "seed": 3}]
    return write_workflow(tree, tmp_path / f"{name}.yaml")


CORPUS_STAGES = ["tokenize"]  # and what it needs: ingest, vocab


@pytest.mark.parametrize("pretrain_workers, targets", [
    (1, CORPUS_STAGES),  # the default tier: the corpus stages, the pipeline's most parallel part
    pytest.param(2, None, marks=pytest.mark.extended),  # every stage, pretraining on two workers
])
def test_the_same_workflow_twice_gives_every_stage_the_same_output(ray_session, data_root, tmp_path,
                                                                   pretrain_workers, targets):
    first, second = (_tiny(tmp_path, data_root, name, actors, pretrain_workers)
                     for name, actors in (("first", 1), ("second", 2)))
    runs = [run_in_process(first, targets), run_in_process(second, targets)]
    assert all(run.failed == {} for run in runs), [run.failed for run in runs]
    ran = sorted(runs[0].results)
    assert ran == sorted(runs[1].results) and (targets is None or {"ingest", "vocab", "tokenize"} <= set(ran))
    digests = [{row["stage"]: row["digest"] for row in stage_status(load_workflow(w)) if row["stage"] in ran}
               for w in (first, second)]
    assert sorted(digests[0]) == ran and None not in digests[0].values()
    differing = {stage: _files(runs, stage) for stage in ran if digests[0][stage] != digests[1][stage]}
    assert differing == {}
    evaluations = [name for name in ran if name.startswith("evaluate/")]
    for name in evaluations:
        assert runs[0].results[name].metrics["ner/test_f1"] == runs[1].results[name].metrics["ner/test_f1"]

    again = (evaluations or CORPUS_STAGES)[:1]  # forced: says whether it made the same output
    forced = run_in_process(first, again, force=(again[0].split("/")[0],))
    assert forced.results[again[0]].metrics[STAGE_REPRODUCED] == 1.0


def _files(runs, stage: str) -> list[str]:
    """The files of a stage's two outputs whose content differs (what the assertion shows)."""
    first, second = (read_digest(Path(run.results[stage].path))["files"] for run in runs)
    return sorted(name for name in set(first) | set(second) if first.get(name) != second.get(name))
