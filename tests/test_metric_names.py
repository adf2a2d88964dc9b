"""Metric names have one maker (bioray.metric_names): what fine-tuning records is what evaluation, the
registry and the terminal read, and each stage's headline comes from its entry's task type."""

from __future__ import annotations

import pytest

from bioray import metric_names as names
from bioray.config import DatasetConfig
from bioray.pipeline.stages.base import Node
from bioray.pipeline.stages.evaluate import Evaluate, EvaluateParams
from bioray.pipeline.stages.finetune import Finetune, FinetuneParams
from bioray.pipeline.terminal import _headline
from bioray.tasks import catalog


def _entry(task: str) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "x", "task": task, "train": "a", "test": "b"})


@pytest.mark.parametrize("task", list(catalog.TASK_TYPES))
def test_every_task_types_metrics_are_its_evaluations_headline(task):
    cls = catalog.task_class(task)
    node = Node("evaluate/x/seed-1", Evaluate(), {}, EvaluateParams.model_construct(dataset=_entry(task)))
    headline = Evaluate().headline_for(node)
    assert headline[0] == names.test_score(task, cls.primary_metric)
    assert set(headline) == {names.test_score(task, m) for m in (cls.primary_metric, *cls.metrics)}
    finetuned = Node("finetune/x/seed-1", Finetune(), {}, FinetuneParams.model_construct(dataset=_entry(task)))
    assert Finetune().headline_for(finetuned) == (names.best_dev(cls.primary_metric),)


def test_an_entry_that_chooses_its_metric_leads_with_it():
    entry = DatasetConfig.model_validate({"name": "x", "task": "relation", "metric": "accuracy", "train": "a",
                                          "test": "b"})
    node = Node("evaluate/x/seed-1", Evaluate(), {}, EvaluateParams.model_construct(dataset=entry))
    assert Evaluate().headline_for(node)[0] == "relation/test_accuracy"
    finetuned = Node("finetune/x/seed-1", Finetune(), {}, FinetuneParams.model_construct(dataset=entry))
    assert Finetune().headline_for(finetuned) == ("finetune/best_dev_accuracy",)


def test_the_terminal_shows_a_list_question_sets_scores():
    """qa_list's measures were missing from evaluate's hand-kept headline list."""
    params = EvaluateParams.model_construct(dataset=_entry("qa_list"))
    node = Node("evaluate/bioasq-list/seed-1", Evaluate(), {}, params)
    metrics = {names.test_score("qa_list", "list_f1"): 0.25, names.STAGE_SECONDS: 3.0, "other/metric": 1.0}
    assert _headline(node, metrics) == "  qa_list/test_list_f1 0.25"


def test_names_are_recognised_by_the_module_that_makes_them():
    assert names.is_test_score(names.test_score("ner", "f1")) and not names.is_test_score(names.best_dev("f1"))
    assert names.is_stage_metric(names.STAGE_SECONDS) and not names.is_stage_metric(names.best_dev("f1"))
    assert names.is_report_metric(names.report_score("ncbi-disease", "f1", "scratch"))
    assert names.report_score("ncbi-disease", "f1", "scratch").startswith(names.report_prefix("scratch"))
    assert names.report_macro() == "report/blurb_style_macro"
    assert names.dataset_mean("ncbi-disease", "ner/test_f1", "random") == "random/ncbi-disease/ner/test_f1"
