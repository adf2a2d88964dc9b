"""PubTator files (NCBI-disease's original release, BC5CDR, ...) -> NER sentences with IOB tags.

A document is a block of `PMID|t|title`, `PMID|a|abstract` and `PMID<TAB>start<TAB>end<TAB>mention<TAB>type
[<TAB>concept]` lines; offsets count over title + " " + abstract. Sentences come from bioray's
segmenter (a sentence boundary inside a mention is dropped), words are bioray.tasks.examples.WORD
(runs of letters/digits, or single other characters, as in BioBERT's preprocessed files), and a word
overlapping a mention is tagged B (the mention's first word) or I.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from bioray.corpus.sentences import sentence_spans
from bioray.tasks.examples import WORD, DatasetError, Sentence
from bioray.tasks.formats.base import FormatOptions, PerFileFormat, require_file


@dataclass
class _Document:
    pmid: str
    line: int  # of its title, for error messages
    text: str = ""
    mentions: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, tag type)


def read_pubtator(path: Path, entity_types: dict[str, str] | None = None) -> list[Sentence]:
    """Every document's sentences, words and tags. `entity_types` maps annotation types to tag types
    ('' for untyped B/I tags, as BioBERT's NCBI-disease files); a type it does not name is an error."""
    require_file(path)
    documents = _documents(path, entity_types)
    if not documents:
        raise DatasetError(f"{path}: no documents")
    return [sentence for document in documents for sentence in _sentences(document, path)]


def _documents(path: Path, entity_types: dict[str, str] | None) -> list[_Document]:
    documents: list[_Document] = []
    with open(path, encoding="utf-8") as stream:
        for line_no, line in enumerate(stream, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            if "|t|" in line.split("\t")[0]:
                pmid, _, title = line.split("|", 2)
                documents.append(_Document(pmid, line_no, title))
                continue
            if not documents:
                raise DatasetError(f"{where}: expected a 'PMID|t|title' line first, got {line[:80]!r}")
            document = documents[-1]
            if line.startswith(f"{document.pmid}|a|"):
                document.text += " " + line.split("|", 2)[2]
                continue
            document.mentions.append(_mention(line.split("\t"), document, entity_types, where))
    return documents


def _mention(parts: list[str], document: _Document, entity_types: dict[str, str] | None,
             where: str) -> tuple[int, int, str]:
    if len(parts) < 5 or parts[0] != document.pmid or not (parts[1].isdigit() and parts[2].isdigit()):
        raise DatasetError(f"{where}: expected 'PMID<TAB>start<TAB>end<TAB>mention<TAB>type' of document "
                           f"{document.pmid}, got {chr(9).join(parts)[:80]!r}")
    start, end, mention, kind = int(parts[1]), int(parts[2]), parts[3], parts[4]
    if document.text[start:end].strip() != mention.strip():  # (a few released mentions carry stray spaces)
        raise DatasetError(f"{where}: offsets {start}-{end} hold {document.text[start:end]!r}, not the mention "
                           f"{mention!r}")
    if entity_types is not None and kind not in entity_types:
        raise DatasetError(f"{where}: entity type {kind!r} is not in the entry's entity_types "
                           f"{sorted(entity_types)}")
    return start, end, entity_types[kind] if entity_types is not None else kind


def _sentences(document: _Document, path: Path) -> list[Sentence]:
    spans = []
    for start, end in sentence_spans(document.text):
        if spans and any(s < start and e > spans[-1][1] for s, e, _ in document.mentions):
            spans[-1] = (spans[-1][0], end)  # a mention crosses this boundary: keep it in one sentence
        else:
            spans.append((start, end))
    sentences = []
    for start, end in spans:
        words, tags = [], []
        for match in WORD.finditer(document.text, start, end):
            words.append(match.group())
            tags.append(_tag(match.start(), match.end(), document.mentions))
        if words:
            sentences.append(Sentence(words, tags, f"{path}:{document.line} (PMID {document.pmid})"))
    return sentences


def _tag(start: int, end: int, mentions: list[tuple[int, int, str]]) -> str:
    for m_start, m_end, kind in mentions:
        if start < m_end and end > m_start:
            prefix = "B" if start <= m_start else "I"
            return f"{prefix}-{kind}" if kind else prefix
    return "O"


class PubtatorOptions(FormatOptions):
    entity_types: dict[str, str] | None = Field(None, description="Annotation type -> tag type ('' for untyped B/I "
                                                "tags); another type is an error. Default: types as given.")


class PubtatorFormat(PerFileFormat):
    Options = PubtatorOptions

    def read(self, path: Path, dataset) -> list[Sentence]:
        return read_pubtator(path, self.options.entity_types)
