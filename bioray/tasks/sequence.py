"""What the sequence-level task types share: the [CLS] head of AutoModelForSequenceClassification over a
text or a pair (truncating the longer side), dynamic padding, and batched prediction. Each task type
(relation, similarity, doc_classification, qa_yesno) is a subclass in its own module that says what
its labels are, how a label becomes a target, how outputs become predictions and how they are scored."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from bioray.constants import IGNORE_INDEX
from bioray.tasks.base import Task
from bioray.tasks.batching import pad_inputs
from bioray.tasks.examples import Example


@dataclass
class Feature:
    input_ids: list[int]
    token_type_ids: list[int]
    label: int | float | list[float]


class SequenceTask(Task):
    problem_type = "single_label_classification"  # HF's name for the head's loss

    def label_list(self, *splits: list[Example]) -> list[str]:
        """The classes: the entry's own list, else every label seen, sorted."""
        if self.dataset.labels:
            return list(self.dataset.labels)
        return sorted({label for split in splits for e in split for label in self.labels_of(e)})

    def target(self, example: Example, index: dict[str, int]):
        """The training target of an example (a class index by default; a class seen only in a test
        set is IGNORE_INDEX: never predicted right)."""
        return index.get(example.label, IGNORE_INDEX)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what predictions are made from (class probabilities by default)."""
        return torch.softmax(logits, dim=-1)

    def decide(self, outputs: torch.Tensor, labels: list[str]) -> list:
        """Outputs -> predictions (the most probable class by default)."""
        return [labels[int(j)] for j in outputs.argmax(-1)]

    @abstractmethod
    def score(self, examples: list[Example], predictions: list, labels: list[str]) -> dict[str, float]:
        ...

    def build_model(self, encoder_dir: str, labels: list[str]):
        from transformers import AutoModelForSequenceClassification

        names = {"id2label": dict(enumerate(labels)), "label2id": {t: i for i, t in enumerate(labels)}} \
            if labels else {}
        return AutoModelForSequenceClassification.from_pretrained(
            encoder_dir, num_labels=max(len(labels), 1), problem_type=self.problem_type, use_safetensors=True, **names)

    def encode(self, examples: list[Example], tokenizer, labels: list[str], max_length: int) -> list[Feature]:
        """Text (and text_b) -> ids, truncating the longer side (for PubMedQA: the contexts) to max_length."""
        index = {t: i for i, t in enumerate(labels)}
        texts = [e.text for e in examples]
        pairs = [e.text_b for e in examples] if any(e.text_b for e in examples) else None
        encoded = tokenizer(texts, [p or "" for p in pairs] if pairs else None, truncation="longest_first",
                            max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else [0] * len(encoded["input_ids"][i])
            features.append(Feature(encoded["input_ids"][i], types, self.target(example, index)))
        return features

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Dynamic padding to the longest input of the batch."""
        dtype = torch.long if isinstance(features[0].label, int) else torch.float
        return {**pad_inputs(features, pad_id), "labels": torch.tensor([f.label for f in features], dtype=dtype)}

    @torch.no_grad()
    def probabilities(self, model, tokenizer, examples: list[Example], labels: list[str], max_length: int,
                      batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The head's outputs per example (class probabilities, or the regression value)."""
        model.eval()
        features = self.encode(examples, tokenizer, labels, max_length)
        order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))  # similar lengths share a batch
        outputs: list[torch.Tensor | None] = [None] * len(features)
        for begin in range(0, len(order), batch_size):
            chunk = order[begin:begin + batch_size]
            batch = self.collate([features[i] for i in chunk], tokenizer.pad_token_id)
            logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float().cpu()
            for row, i in enumerate(chunk):
                outputs[i] = self.outputs(logits)[row]
        return torch.stack(outputs) if outputs else torch.zeros((0, max(len(labels), 1)))

    def predict(self, model, tokenizer, examples, labels, max_length, batch_size, device="cpu") -> list:
        return self.decide(self.probabilities(model, tokenizer, examples, labels, max_length, batch_size, device),
                           labels)
