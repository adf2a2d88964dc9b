"""Using fine-tuned models on raw text: entities with character offsets (NER) and label
probabilities (classification), for `bioray predict`, the served MLflow model (bioray.tasks.serving)
and the batch tagging of a documents Parquet.

Text is split into BioBERT's words (examples.WORD) and each word is tagged on its first sub-token, as
the model was trained. The Hugging Face pipeline of the logged model, loaded with
`mlflow.transformers.load_model(uri, aggregation_strategy="first")`, tags the tokenizer's own words
the same way and finds the same entities (tests/integration/test_serving_e2e.py) wherever the two
splits agree (everywhere but at symbols outside ASCII such as ° and ±, which BioBERT splits off and
BERT's tokenizer does not, combining accents and CJK characters) and the text fits one window (bioray
splits a longer text into windows at word boundaries; the pipeline truncates it unless given `stride`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from bioray.tasks.examples import WORD, Sentence
from bioray.tasks.ner import collate, make_windows


def model_kind(config) -> str:
    architecture = (config.architectures or [""])[0]
    for suffix, kind in (("ForTokenClassification", "ner"), ("ForSequenceClassification", "classification"),
                         ("ForQuestionAnswering", "qa")):
        if architecture.endswith(suffix):
            return kind
    raise ValueError(f"model architecture {architecture!r}: expected a token- or sequence-classification model")


def _entities(text: str, spans: list[tuple[int, int]], tags: list[str], scores: list[float]) -> list[dict]:
    """BIO(ES) word tags -> entities (conlleval chunking: I after O or another type opens one)."""
    entities, current = [], None
    for (start, end), tag, score in zip(spans, tags, scores):
        prefix, _, kind = tag.partition("-")
        kind = kind or "ENT"  # untyped BioBERT tags
        continues = current is not None and prefix in ("I", "E") and current["type"] == kind
        if prefix == "O" or not continues:
            if current:
                entities.append(current)
            current = None if prefix == "O" else {"start": start, "end": end, "type": kind, "scores": [score]}
        else:
            current["end"] = end
            current["scores"].append(score)
        if prefix in ("E", "S") and current:
            entities.append(current)
            current = None
    if current:
        entities.append(current)
    return [{"start": e["start"], "end": e["end"], "text": text[e["start"]:e["end"]], "type": e["type"],
             "score": round(sum(e["scores"]) / len(e["scores"]), 4)} for e in entities]


@torch.no_grad()
def tag_texts(model, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32) -> list[list[dict]]:
    """Entities of each text: words with offsets, tagged on their first sub-token (long texts in
    windows), chunked into entities with the mean tag probability as score."""
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    spans = [[m.span() for m in WORD.finditer(text)] for text in texts]
    sentences = [Sentence([text[a:b] for a, b in s], ["O"] * len(s)) for text, s in zip(texts, spans)]
    windows = make_windows([s for s in sentences if s.words], tokenizer, {}, max_length)
    nonempty = [i for i, s in enumerate(sentences) if s.words]
    tags = [["O"] * len(s.words) for s in sentences]
    scores = [[1.0] * len(s.words) for s in sentences]
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    for begin in range(0, len(order), batch_size):
        chunk = [windows[i] for i in order[begin:begin + batch_size]]
        batch = collate(chunk, tokenizer.pad_token_id)
        probabilities = torch.softmax(model(input_ids=batch["input_ids"],
                                            attention_mask=batch["attention_mask"]).logits.float(), -1)
        best, which = probabilities.max(-1)
        for row, window in enumerate(chunk):
            sentence = nonempty[window.sentence]
            for position, word in enumerate(window.word_index):
                if word >= 0:
                    tags[sentence][word] = labels[int(which[row, position])]
                    scores[sentence][word] = float(best[row, position])
    return [_entities(text, s, t, p) for text, s, t, p in zip(texts, spans, tags, scores)]


@torch.no_grad()
def classify_texts(model, tokenizer, texts: list[str], max_length: int = 512, batch_size: int = 32) -> list[dict]:
    """Label probabilities (softmax; sigmoid per label for multi-label models) or the regression
    score of each text; a tab splits a text into a pair (sentence pairs, question<TAB>context)."""
    model.eval()
    config = model.config
    pairs = [t.split("\t", 1) if "\t" in t else [t, None] for t in texts]
    results = []
    for begin in range(0, len(pairs), batch_size):
        chunk = pairs[begin:begin + batch_size]
        first, second = [p[0] for p in chunk], [p[1] for p in chunk]
        encoded = tokenizer(first, second if any(second) else None, truncation="longest_first",
                            max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**encoded).logits.float()
        if config.problem_type == "regression" or config.num_labels == 1:
            results += [{"score": float(v)} for v in logits[:, 0]]
            continue
        multi = config.problem_type == "multi_label_classification"
        probabilities = torch.sigmoid(logits) if multi else torch.softmax(logits, -1)
        for row in probabilities:
            ranked = sorted(((config.id2label[i], float(p)) for i, p in enumerate(row)), key=lambda x: -x[1])
            entry = {"labels": [{"label": label, "probability": round(p, 4)} for label, p in ranked]}
            entry["predicted"] = [label for label, p in ranked if p >= 0.5] if multi else ranked[0][0]
            results.append(entry)
    return results


class Predictor:
    """A fine-tuned model loaded once; raw text lines in, per line `entities` for an NER model,
    `labels`/`predicted` (or `score`) for a classification (regression) model. Raises OSError or
    ValueError, with the reason, for a model that cannot be used."""

    def __init__(self, model_dir: Path, tokenizer_dir: Path | None = None):
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        self.kind = model_kind(AutoConfig.from_pretrained(str(model_dir)))
        if self.kind == "qa":
            raise ValueError("extractive QA models need a question and a context: not supported by predict")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
        auto_class = AutoModelForTokenClassification if self.kind == "ner" else AutoModelForSequenceClassification
        self.model = auto_class.from_pretrained(str(model_dir), use_safetensors=True)

    def __call__(self, lines: list[str], max_length: int | None = None, batch_size: int = 32) -> list[dict]:
        if self.kind == "ner":
            return [{"entities": e} for e in tag_texts(self.model, self.tokenizer, lines, max_length or 128,
                                                       batch_size)]
        return classify_texts(self.model, self.tokenizer, lines, max_length or 512, batch_size)
