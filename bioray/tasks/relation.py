"""Relation extraction as sentence classification (ChemProt, DDI, GAD, EU-ADR in their BLUE/BioBERT
preprocessings, or DDI in its original XML release: entities masked or marked in the text), micro-F1
over the positive classes."""

from __future__ import annotations

from bioray.tasks.metrics import relation_scores
from bioray.tasks.sequence import SequenceTask


class RelationTask(SequenceTask):
    name, primary_metric, formats = "relation", "f1", ("tsv", "jsonl", "ddi_xml")

    def score(self, examples, predictions, labels) -> dict[str, float]:
        return relation_scores([e.label for e in examples], predictions, self.dataset.negative_label)
