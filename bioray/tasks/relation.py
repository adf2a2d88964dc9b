"""Relation extraction as sentence classification (ChemProt, DDI, GAD, EU-ADR in their BLUE/BioBERT
preprocessings, or DDI in its original XML release: entities masked or marked in the text). The papers'
metric is micro-F1 over the positive classes (with two classes: the positive class's F1), which needs
the no-relation class named; an entry states it, or chooses accuracy or macro-F1 instead: never a
silent accuracy."""

from __future__ import annotations

from bioray.tasks.metrics import classification_scores, relation_scores
from bioray.tasks.sequence import SequenceTask


class RelationTask(SequenceTask):
    name, primary_metric, metrics = "relation", "f1", ("accuracy", "macro_f1")
    formats = ("tsv", "jsonl", "ddi_xml")

    @classmethod
    def entry_problems(cls, dataset) -> list[str]:
        if dataset.negative_label is None and dataset.metric in (None, "f1"):
            return ["negative_label: a relation entry states its metric: `negative_label: <the no-relation "
                    "class>` (micro-F1 over the other classes, as BioBERT, BLUE and BLURB score), or `metric: "
                    "accuracy` / `metric: macro_f1`"]
        return super().entry_problems(dataset)

    def score(self, examples, predictions, labels) -> dict[str, float]:
        gold = [e.label for e in examples]
        positive = relation_scores(gold, predictions, self.dataset.negative_label) \
            if self.dataset.negative_label is not None else {}
        return {**positive, **classification_scores(gold, predictions)}
