"""Sentence boundaries with pysbd (rule-based, handles abbreviations such as "e.g." and "Fig.")."""

from __future__ import annotations

import pysbd

_segmenter = None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character (start, end) of each sentence, line by line (titles and sections stay separate)."""
    global _segmenter
    if _segmenter is None:
        _segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    spans = []
    offset = 0
    for line in text.split("\n"):
        for span in _segmenter.segment(line) if line.strip() else []:
            sentence = span.sent.rstrip()
            start = offset + span.start + (len(sentence) - len(sentence.lstrip()))
            end = offset + span.start + len(sentence)
            if end > start:
                spans.append((start, end))
        offset += len(line) + 1
    return spans
