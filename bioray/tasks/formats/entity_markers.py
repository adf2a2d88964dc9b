"""How a relation example shows its two entities in the sentence, from their character spans: masked
(each one's text replaced by a placeholder such as @DRUG$, as BLUE/BLURB preprocess DDI and ChemProt)
or tagged ([E1] ... [/E1] and [E2] ... [/E2] around them, so the model still reads the names).

Spans are half-open [start, end) into the sentence. Other mentions in the sentence stay as they are:
only the pair's two entities are marked, which is what tells one example of a sentence from another.
"""

from __future__ import annotations

from typing import Literal

Span = tuple[int, int]
Style = Literal["mask", "tags"]


def mark(text: str, first: Span, second: Span, style: Style, placeholder: str) -> str:
    """The sentence with the pair's entities marked; `first` is the pair's first entity (E1) wherever
    it stands in the text."""
    return mask(text, first, second, placeholder) if style == "mask" else tag(text, first, second)


def mask(text: str, first: Span, second: Span, placeholder: str) -> str:
    """Each entity's text -> the placeholder. Overlapping spans (one drug's name inside the other's, as
    in coordinations like "calcium- and magnesium-containing antacids") cannot be replaced one by one:
    their union becomes two placeholders, so every example still shows the two entities it is about."""
    if first[0] < second[1] and second[0] < first[1]:
        start, end = min(first[0], second[0]), max(first[1], second[1])
        return f"{text[:start]}{placeholder} {placeholder}{text[end:]}"
    for start, end in sorted((first, second), reverse=True):  # right to left: earlier offsets stay valid
        text = text[:start] + placeholder + text[end:]
    return text


def tag(text: str, first: Span, second: Span) -> str:
    """`[E1] ` before and ` [/E1]` after the first entity, the same with E2 for the second. Nested
    spans get nested tags (at one position a span closes before another opens, the inner one closes
    first and the outer one opens first); crossing spans get crossing tags, which still say where each
    entity starts and ends."""
    events = []  # (position, closes before opens, inner first / outer first, E1 outside E2, marker)
    for rank, name, (start, end) in ((0, "E1", first), (1, "E2", second)):
        events.append((start, 1, -end, rank, f"[{name}] "))
        events.append((end, 0, -start, 1 - rank, f" [/{name}]"))
    pieces, done = [], 0
    for position, *_, marker in sorted(events):
        pieces += [text[done:position], marker]
        done = position
    return "".join(pieces) + text[done:]
