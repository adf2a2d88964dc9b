"""Extractive factoid QA (BioASQ, in SQuAD format or its official JSON): answer spans in a context,
ranked answers, strict/lenient accuracy and MRR per question.

A BioASQ question comes with several snippets: each is one example (one context; a snippet longer than
the window is read in overlapping windows), predicted on its own; the question's answers are the
candidates of all its snippets merged and ranked (bioray.tasks.qa_merge), and it is scored once, as
BioBERT and the official evaluator do."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bioray.tasks.base import Task
from bioray.tasks.batching import pad_inputs
from bioray.tasks.examples import QAExample
from bioray.tasks.metrics import factoid_scores
from bioray.tasks.qa_merge import question_gold, rank_per_question, snippet_counts, snippet_probabilities

STRIDE = 64        # tokens shared by consecutive windows of a long context
MAX_ANSWER = 30    # tokens
CANDIDATES = 20    # best starts x best ends considered per window
RANKED = 5         # answers returned per question (BioASQ takes up to 5)


@dataclass
class QAFeature:
    input_ids: list[int]
    token_type_ids: list[int]
    start: int              # answer start/end token, 0 ([CLS]) when the answer is not in this window
    end: int
    example: int
    offsets: list[tuple[int, int] | None]  # character span of each context token, None elsewhere


class FactoidTask(Task):
    name, primary_metric, metrics = "qa_factoid", "mrr", ("strict_accuracy", "lenient_accuracy")
    formats = ("squad", "bioasq")

    def labels_of(self, example: QAExample) -> list[str]:
        return []  # answers are spans of the context, not classes

    def label_list(self, *splits) -> list[str]:
        return []

    def build_model(self, encoder_dir: str, labels: list[str]):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(encoder_dir, use_safetensors=True)

    def encode(self, examples: list[QAExample], tokenizer, labels: list[str], max_length: int) -> list[QAFeature]:
        encoded = tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                            max_length=max_length, stride=STRIDE, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
        features = []
        for i, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[example_index]
            sequence = encoded.sequence_ids(i)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence)]
            start = end = 0
            if example.answers:
                first, last = example.answer_starts[0], example.answer_starts[0] + len(example.answers[0])
                inside = [t for t, o in enumerate(offsets) if o is not None and o[0] < last and o[1] > first]
                if inside and offsets[inside[0]][0] <= first and offsets[inside[-1]][1] >= last:
                    start, end = inside[0], inside[-1]
            types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else [0] * len(encoded["input_ids"][i])
            features.append(QAFeature(encoded["input_ids"][i], types, start, end, example_index, offsets))
        return features

    def collate(self, features: list[QAFeature], pad_id: int) -> dict[str, torch.Tensor]:
        return {**pad_inputs(features, pad_id), "start_positions": torch.tensor([f.start for f in features]),
                "end_positions": torch.tensor([f.end for f in features])}

    @torch.no_grad()
    def predict(self, model, tokenizer, examples: list[QAExample], labels, max_length, batch_size,
                device="cpu") -> list[dict[str, float]]:
        """Per example (one snippet of a question): its candidate answers and their probabilities (a
        softmax over its best spans, scored by start + end logit, over all its windows). Questions are
        answered from these by `answers`."""
        model.eval()
        features = self.encode(examples, tokenizer, labels, max_length)
        candidates: list[dict[str, float]] = [{} for _ in examples]
        for begin in range(0, len(features), batch_size):
            chunk = features[begin:begin + batch_size]
            batch = self.collate(chunk, tokenizer.pad_token_id)
            out = model(**{k: v.to(device) for k, v in batch.items() if not k.endswith("_positions")})
            for row, feature in enumerate(chunk):
                real = len(feature.input_ids)  # the batch is padded to its longest window
                starts, ends = out.start_logits[row, :real].float().cpu(), out.end_logits[row, :real].float().cpu()
                self._spans(feature, starts, ends, examples[feature.example].context, candidates[feature.example])
        return [snippet_probabilities(found) for found in candidates]

    @staticmethod
    def _spans(feature: QAFeature, start_logits, end_logits, context: str, found: dict[str, float]) -> None:
        starts = start_logits.topk(min(CANDIDATES, len(feature.offsets))).indices.tolist()
        ends = end_logits.topk(min(CANDIDATES, len(feature.offsets))).indices.tolist()
        for s in starts:
            for e in ends:
                if feature.offsets[s] is None or feature.offsets[e] is None or not 0 <= e - s < MAX_ANSWER:
                    continue
                text = context[feature.offsets[s][0]:feature.offsets[e][1]].strip()
                score = float(start_logits[s] + end_logits[e])
                if text and score > found.get(text, float("-inf")):
                    found[text] = score

    def answers(self, examples: list[QAExample], predictions: list[dict[str, float]]) -> dict[str, list[str]]:
        """Each question's answers: the first RANKED of its snippets' merged ranking."""
        ranked = rank_per_question([e.question_id for e in examples], predictions)
        return {question: [text for text, _ in found[:RANKED]] for question, found in ranked.items()}

    def score(self, examples: list[QAExample], predictions: list[dict[str, float]], labels) -> dict[str, float]:
        """Over questions, not snippets: a factoid question's gold is one item, its synonyms."""
        gold, answers = question_gold(examples), self.answers(examples, predictions)
        return factoid_scores([_synonyms(items) for items in gold.values()], [answers[q] for q in gold])

    def details(self, examples: list[QAExample], predictions) -> str:
        """The report says what was counted: questions, not the snippet examples it lists."""
        return (f"Scored per question: {len(snippet_counts(examples))} questions, read in {len(examples)} "
                f"snippet contexts (each question's answers merged over its snippets).\n")

    def prediction_rows(self, examples: list[QAExample], predictions: list[dict[str, float]]) -> list[dict]:
        """One row per question: its gold, its answers, and how many snippets it was read in."""
        gold, answers, counts = question_gold(examples), self.answers(examples, predictions), snippet_counts(examples)
        return [{"id": q, "gold": self.gold_row(items), "predicted": answers[q], "snippets": counts[q]}
                for q, items in gold.items()]

    @staticmethod
    def gold_row(items: list[list[str]]) -> list:
        """A question's gold as predictions.jsonl shows it (factoid: its synonyms; list: its items)."""
        return _synonyms(items)


def _synonyms(items: list[list[str]]) -> list[str]:
    """A factoid question's gold synonyms (a golden file may give them as several lists)."""
    return [synonym for synonyms in items for synonym in synonyms]
