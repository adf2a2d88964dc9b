"""Task type of a registry entry -> the object that knows its labels, head, encoding and metric."""

from __future__ import annotations


def task_for(dataset):
    if dataset.task == "ner":
        from bioray.tasks.ner import NerTask
        return NerTask(dataset)
    if dataset.task == "qa_factoid":
        from bioray.tasks.qa import FactoidTask
        return FactoidTask(dataset)
    from bioray.tasks.classification import SequenceTask
    return SequenceTask(dataset)
