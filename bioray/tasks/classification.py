"""Sequence-level tasks on the [CLS] representation: relation extraction, sentence similarity
(regression), multi-label document classification and yes/no/maybe question answering."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForSequenceClassification

from bioray.tasks.batching import pad_inputs
from bioray.tasks.datasets import Example
from bioray.tasks.metrics import (
    classification_scores,
    multilabel_scores,
    relation_scores,
    similarity_scores,
)

PRIMARY = {"relation": "f1", "similarity": "pearson", "doc_classification": "micro_f1", "qa_yesno": "accuracy"}
PROBLEM = {"relation": "single_label_classification", "similarity": "regression",
           "doc_classification": "multi_label_classification", "qa_yesno": "single_label_classification"}


@dataclass
class Feature:
    input_ids: list[int]
    token_type_ids: list[int]
    label: int | float | list[float]


class SequenceTask:
    """One task type's labels, encoding, model head, prediction and paper metric."""

    def __init__(self, dataset):
        self.dataset, self.kind = dataset, dataset.task
        self.primary = PRIMARY[self.kind]

    def label_list(self, *splits: list[Example]) -> list[str]:
        """The classes (none for regression): the entry's own list, else every label seen, sorted."""
        if self.kind == "similarity":
            return []
        if self.dataset.labels:
            return list(self.dataset.labels)
        seen = {label for split in splits for e in split
                for label in (e.label if isinstance(e.label, list) else [e.label])}
        return sorted(seen)

    def build_model(self, encoder_dir: str, labels: list[str]):
        names = {"id2label": dict(enumerate(labels)), "label2id": {t: i for i, t in enumerate(labels)}} if labels else {}
        return AutoModelForSequenceClassification.from_pretrained(
            encoder_dir, num_labels=max(len(labels), 1), problem_type=PROBLEM[self.kind], use_safetensors=True, **names)

    def encode(self, examples: list[Example], tokenizer, labels: list[str], max_length: int) -> list[Feature]:
        """Text (and text_b) -> ids, truncating the longer side (for PubMedQA: the contexts) to max_length."""
        index = {t: i for i, t in enumerate(labels)}
        texts = [e.text for e in examples]
        pairs = [e.text_b for e in examples] if any(e.text_b for e in examples) else None
        encoded = tokenizer(texts, [p or "" for p in pairs] if pairs else None, truncation="longest_first",
                            max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            if self.kind == "similarity":
                label: int | float | list[float] = float(example.label)
            elif self.kind == "doc_classification":
                label = [1.0 if t in example.label else 0.0 for t in labels]
            else:
                label = index.get(example.label, -100)  # a class seen only in test: never predicted right
            types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else [0] * len(encoded["input_ids"][i])
            features.append(Feature(encoded["input_ids"][i], types, label))
        return features

    @staticmethod
    def collate(features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Dynamic padding to the longest input of the batch."""
        dtype = torch.long if isinstance(features[0].label, int) else torch.float
        return {**pad_inputs(features, pad_id), "labels": torch.tensor([f.label for f in features], dtype=dtype)}

    @torch.no_grad()
    def probabilities(self, model, tokenizer, examples: list[Example], labels: list[str], max_length: int,
                      batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Class probabilities (softmax; sigmoid per label for multi-label) or the regression output."""
        model.eval()
        features = self.encode(examples, tokenizer, labels, max_length)
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))  # similar lengths share a batch
        outputs: list[torch.Tensor | None] = [None] * len(features)
        for begin in range(0, len(order), batch_size):
            chunk = order[begin:begin + batch_size]
            batch = self.collate([features[i] for i in chunk], tokenizer.pad_token_id)
            logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float().cpu()
            if self.kind == "doc_classification":
                logits = torch.sigmoid(logits)
            elif self.kind != "similarity":
                logits = torch.softmax(logits, dim=-1)
            for row, i in enumerate(chunk):
                outputs[i] = logits[row]
        return torch.stack(outputs) if outputs else torch.zeros((0, max(len(labels), 1)))

    def decide(self, probabilities: torch.Tensor, labels: list[str]) -> list:
        """Probabilities -> the task's predictions (a class, a score or a set of classes)."""
        if self.kind == "similarity":
            return probabilities[:, 0].tolist()
        if self.kind == "doc_classification":
            return [[labels[j] for j in range(len(labels)) if row[j] >= 0.5] for row in probabilities]
        return [labels[int(j)] for j in probabilities.argmax(-1)]

    def predict(self, model, tokenizer, examples, labels, max_length, batch_size, device="cpu") -> list:
        return self.decide(self.probabilities(model, tokenizer, examples, labels, max_length, batch_size, device), labels)

    def score(self, examples: list[Example], predictions: list, labels: list[str]) -> dict[str, float]:
        gold = [e.label for e in examples]
        if self.kind == "relation":
            return relation_scores(gold, predictions, self.dataset.negative_label)
        if self.kind == "similarity":
            return similarity_scores(gold, predictions)
        if self.kind == "doc_classification":
            return multilabel_scores(gold, predictions, labels)
        return classification_scores(gold, predictions)
