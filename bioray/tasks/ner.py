"""Named-entity recognition: sub-token alignment of words and IOB tags, entity-level F1 (seqeval)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bioray.constants import IGNORE_INDEX
from bioray.tasks.base import Task
from bioray.tasks.batching import attention_mask, pad_rows
from bioray.tasks.examples import Sentence


def label_list(*splits: list[Sentence], known: list[str] | None = None) -> list[str]:
    """The entry's tag list, else all tags seen; 'O' first, then sorted."""
    tags = set(known) if known else {t for split in splits for s in split for t in s.tags}
    return ["O"] + sorted(tags - {"O"})


def for_seqeval(tags: list[str]) -> list[str]:
    """Untyped BioBERT tags (B, I) become B-ENT/I-ENT so seqeval sees one entity type."""
    return [f"{t}-ENT" if t in ("B", "I") else t for t in tags]


@dataclass
class Window:
    """A model input: one sentence, or a piece of one that is too long for the model."""
    sentence: int
    input_ids: list[int]
    labels: list[int]       # label id on each word's first sub-token, IGNORE_INDEX elsewhere
    word_index: list[int]   # word position of each labelled sub-token (-1 elsewhere)


def make_windows(sentences: list[Sentence], tokenizer, label_ids: dict[str, int], max_length: int) -> list[Window]:
    """Sub-tokenize each sentence; sentences over max_length are split at word boundaries, never truncated."""
    budget = max_length - 2
    encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, add_special_tokens=False)
    windows = []
    for s_index, sentence in enumerate(sentences):
        per_word: list[list[int]] = [[] for _ in sentence.words]
        for token_id, word in zip(encoded["input_ids"][s_index], encoded.word_ids(s_index)):
            per_word[word].append(token_id)
        per_word = [ids or [tokenizer.unk_token_id] for ids in per_word]  # e.g. a lone control character
        start = 0
        while start < len(sentence.words):
            ids, labels, index = [tokenizer.cls_token_id], [IGNORE_INDEX], [-1]
            end = start
            while end < len(sentence.words) and (len(ids) - 1 + len(per_word[end]) <= budget or end == start):
                word_ids = per_word[end][:budget]
                ids += word_ids
                labels += [label_ids.get(sentence.tags[end], 0)] + [IGNORE_INDEX] * (len(word_ids) - 1)
                index += [end] + [-1] * (len(word_ids) - 1)
                end += 1
            ids.append(tokenizer.sep_token_id)
            labels.append(IGNORE_INDEX)
            index.append(-1)
            windows.append(Window(s_index, ids, labels, index))
            start = end
    return windows


def collate(windows: list[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest window of the batch."""
    ids = [w.input_ids for w in windows]
    return {"input_ids": pad_rows(ids, pad_id), "attention_mask": attention_mask(ids),
            "labels": pad_rows([w.labels for w in windows], IGNORE_INDEX)}


@torch.no_grad()
def predict_tags(model, tokenizer, sentences: list[Sentence], labels: list[str], max_length: int,
                 batch_size: int, device: torch.device | str = "cpu") -> list[list[str]]:
    """Tag of every word, predicted on its first sub-token; windows of a sentence are stitched back."""
    model.eval()
    label_ids = {t: i for i, t in enumerate(labels)}
    windows = make_windows(sentences, tokenizer, label_ids, max_length)
    predicted = [["O"] * len(s.words) for s in sentences]
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))  # similar lengths share a batch
    for begin in range(0, len(order), batch_size):
        chunk = [windows[i] for i in order[begin:begin + batch_size]]
        batch = collate(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        best = logits.argmax(-1).cpu()
        for row, window in enumerate(chunk):
            for position, word in enumerate(window.word_index):
                if word >= 0:
                    predicted[window.sentence][word] = labels[int(best[row, position])]
    return predicted


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level exact-match precision/recall/F1 (conlleval semantics)."""
    from seqeval.metrics import f1_score, precision_score, recall_score  # it imports sklearn: not at import

    gold = [for_seqeval(t) for t in gold]
    predicted = [for_seqeval(t) for t in predicted]
    return {"precision": precision_score(gold, predicted), "recall": recall_score(gold, predicted),
            "f1": f1_score(gold, predicted)}


def entity_report(gold: list[list[str]], predicted: list[list[str]]) -> str:
    from seqeval.metrics import classification_report

    return classification_report([for_seqeval(t) for t in gold], [for_seqeval(t) for t in predicted], digits=4)


class NerTask(Task):
    """Token classification: windows of first-sub-token labels, entity-level F1."""

    name, primary_metric, formats = "ner", "f1", ("conll", "pubtator")

    def labels_of(self, sentence: Sentence) -> list[str]:
        return sentence.tags

    def label_list(self, *splits: list[Sentence]) -> list[str]:
        return label_list(*splits, known=self.dataset.labels)

    def build_model(self, encoder_dir: str, labels: list[str]):
        """The head's label names in the saved config are typed IOB2 (untyped B/I become B-ENT/I-ENT):
        Hugging Face's pipeline groups words into entities by the B-/I- prefix, and would read a bare
        B as an entity type of its own. Label ids, and so training and scoring, are unchanged."""
        from transformers import AutoModelForTokenClassification

        names = for_seqeval(labels)
        return AutoModelForTokenClassification.from_pretrained(
            encoder_dir, num_labels=len(labels), id2label=dict(enumerate(names)),
            label2id={t: i for i, t in enumerate(names)}, use_safetensors=True)

    def encode(self, sentences: list[Sentence], tokenizer, labels: list[str], max_length: int) -> list[Window]:
        return make_windows(sentences, tokenizer, {t: i for i, t in enumerate(labels)}, max_length)

    def collate(self, windows: list[Window], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(windows, pad_id)

    def predict(self, model, tokenizer, sentences, labels, max_length, batch_size, device="cpu") -> list[list[str]]:
        return predict_tags(model, tokenizer, sentences, labels, max_length, batch_size, device)

    def score(self, sentences: list[Sentence], predictions: list[list[str]], labels: list[str]) -> dict[str, float]:
        return entity_scores([s.tags for s in sentences], predictions)

    def details(self, sentences: list[Sentence], predictions: list[list[str]]) -> str:
        return f"```\n{entity_report([s.tags for s in sentences], predictions)}\n```\n"

    def prediction_rows(self, sentences: list[Sentence], predictions: list[list[str]]) -> list[dict]:
        return [{"words": s.words, "gold": s.tags, "predicted": p} for s, p in zip(sentences, predictions)]
