"""Metric names: built by these functions and recognised by them, never assembled in one place and
parsed in another. A stage's MLflow metrics are `<family>/<name>`: `finetune/best_dev_f1`,
`ner/test_f1` (a task type's test score), `report/<arm>/<dataset>/<metric>`, `stage/seconds`."""

from __future__ import annotations

STAGE_SECONDS = "stage/seconds"  # every stage's wall time (bioray.pipeline.execute)
STAGE_REPRODUCED = "stage/reproduced"  # a forced rerun: 1 when its output equals the one it replaced
# a fine-tune's seconds from its inputs being ready (the runner submitting it) to its first optimizer step
FINETUNE_STARTUP = "finetune/startup_s"
FINETUNE_TRAIN_SECONDS = "finetune/train_s"  # its epochs (dev scoring included), not its start or its saving
# pieces per word of the test text under the model's vocabulary: a gap between arms with different
# vocabularies can be a slower start on longer sequences, not what pretraining taught
SUBWORDS_PER_WORD = "evaluate/subwords_per_word"
_STAGE, _REPORT, _TEST = "stage/", "report/", "/test_"


def heldout_metric(corpus: str, name: str) -> str:
    """The domain matrix: an encoder's held-out masked-LM `name` on one corpus, `heldout/<corpus>/<name>`."""
    return f"heldout/{corpus}/{name}"


def best_dev(metric: str) -> str:
    """Fine-tuning's dev score of its best epoch, by the entry's metric (Task.metric)."""
    return f"finetune/best_dev_{metric}"


def test_score(task: str, metric: str) -> str:
    """An evaluation's test score: `<task type>/test_<metric>`."""
    return f"{task}{_TEST}{metric}"


def is_test_score(name: str) -> bool:
    return _TEST in name


def is_stage_metric(name: str) -> bool:
    """The runner's own measurements of a stage (not a result of it)."""
    return name.startswith(_STAGE)


def dataset_mean(dataset: str, metric: str, arm: str | None = None) -> str:
    """A dataset's mean over seeds of one of its test scores (0-1): `ncbi-disease/ner/test_f1`."""
    return f"{arm}/{dataset}/{metric}" if arm else f"{dataset}/{metric}"


def report_prefix(arm: str | None = None) -> str:
    """What the report's metrics of one arm start with (of a single-encoder workflow: all of them)."""
    return f"{_REPORT}{arm}/" if arm else _REPORT


def report_score(dataset: str, metric: str, arm: str | None = None) -> str:
    """The report's mean over seeds of one dataset's metric, on the 0-100 scale."""
    return f"{report_prefix(arm)}{dataset}/{metric}"


def report_macro(arm: str | None = None) -> str:
    """The report's BLURB-style macro average."""
    return f"{report_prefix(arm)}blurb_style_macro"


def is_report_metric(name: str) -> bool:
    return name.startswith(_REPORT)
