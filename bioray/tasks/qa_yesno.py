"""Yes/no(/maybe) question answering as pair classification (PubMedQA, BioASQ yes/no: the question and
its snippets joined, as BLURB reads it): accuracy and macro-F1."""

from __future__ import annotations

from bioray.tasks.metrics import classification_scores
from bioray.tasks.sequence import SequenceTask


class YesNoTask(SequenceTask):
    name, primary_metric, metrics = "qa_yesno", "accuracy", ("macro_f1",)
    formats = ("tsv", "jsonl", "pubmedqa", "bioasq")

    def score(self, examples, predictions, labels) -> dict[str, float]:
        return classification_scores([e.label for e in examples], predictions)
