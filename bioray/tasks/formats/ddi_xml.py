"""The DDI Extraction 2013 corpus (Herrero-Zazo et al. 2013) in its original release: folders of
per-document XML files (Train/DrugBank, Train/MedLine; for the DDI task, Test/Test for DDI Extraction
task/DrugBank and .../MedLine), searched recursively.

Each `<pair>` of a `<sentence>` becomes one relation example: the sentence with the pair's two drugs
masked (@DRUG$) or tagged (the entry's `entity_markers`), labelled DDI-<type> for a true pair (type
mechanism, effect, advise or int) and DDI-false otherwise: the five classes BLUE and BLURB score.

The release has no dev set: an entry's `dev` folder, else a seeded split of the training documents by
the entry's `split` (dev fraction and seed). Documents, not sentences, are split: a document's
sentences describe the same drug (DrugBank) or abstract (MedLine), so a dev set holding some of them
would share context with training.

Offsets: charOffset is inclusive at both ends ("12-20" is text[12:21]); a discontinuous mention lists
its fragments ("0-7;32-39", its `text` the fragments joined by spaces). A discontinuous entity is
marked over its full span, from its first start to its last end, the words between its fragments
included (a mask per fragment would show one drug as two). The 2011 release (`interaction=` pairs,
end-exclusive offsets) is not read: its pairs fail for a missing `ddi` attribute.

Parsed with the standard library's ElementTree: it resolves no external entities, and its expat (2.4 and
later) refuses entity-expansion bombs.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Literal

from pydantic import Field

from bioray.tasks.examples import DatasetError, Example
from bioray.tasks.formats.base import Format, Resolve, SplitOptions, read_each, split_ids
from bioray.tasks.formats.entity_markers import Span, mark

TYPES = ("mechanism", "effect", "advise", "int")  # of a true pair; the label is DDI-<type>
NEGATIVE = "DDI-false"
PLACEHOLDER = "@DRUG$"  # BLUE/BLURB's mask for DDI
# The release has a few offsets a character or two off their mention's text (Eszopiclone_ddi.xml s16 e2:
# "95-98;107-114" for "96-99;108-115"): a mention found at a small shift is read there, with a warning.
SHIFTS = (0, 1, -1, 2, -2)
log = logging.getLogger(__name__)


def xml_files(folder: Path) -> list[Path]:
    """The folder's .xml files, in every subfolder (DrugBank/, MedLine/), sorted."""
    if folder.is_file():
        raise DatasetError(f"{folder}: a file, where a folder of DDI XML files was expected")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    files = sorted(folder.rglob("*.xml"))
    if not files:
        raise DatasetError(f"{folder}: no .xml files (searched with its subfolders)")
    return files


def read_folder(folder: Path, style: str) -> dict[str, list[Example]]:
    """Each document's examples, keyed by its file's path under the folder (unique, and the same
    wherever the corpus is unpacked, so a seeded split is too)."""
    files = xml_files(folder)
    documents = {path.relative_to(folder).as_posix(): read_document(path, style) for path in files}
    if not any(documents.values()):  # e.g. a folder annotated for NER only (the wrong test folder)
        raise DatasetError(f"{folder}: no <pair> in its {len(files)} XML files")
    return documents


def read_document(path: Path, style: str) -> list[Example]:
    """One example per pair of each sentence of a `<document>` file."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise DatasetError(f"{path}:{exc.position[0]}: malformed XML ({exc})") from None
    if root.tag != "document":
        raise DatasetError(f"{path}: expected a <document> root element, got <{root.tag}>")
    return [example for sentence in root.iter("sentence") for example in _sentence(sentence, path, style)]


def _sentence(sentence: ElementTree.Element, path: Path, style: str) -> list[Example]:
    sentence_id = _attribute(sentence, "id", f"{path}: a sentence")
    where = f"{path}: sentence {sentence_id}"
    text = _attribute(sentence, "text", where)
    spans: dict[str, Span] = {}
    for entity in sentence.iter("entity"):
        entity_id = _attribute(entity, "id", f"{where}: an entity")
        spans[entity_id] = _span(entity, text, f"{where}, entity {entity_id}")
    examples = []
    for pair in sentence.iter("pair"):
        pair_where = f"{path}: pair {_attribute(pair, 'id', f'{where}: a pair')}"
        first, second = (_entity(pair, key, spans, pair_where, sentence_id) for key in ("e1", "e2"))
        examples.append(Example(mark(text, first, second, style, PLACEHOLDER), None, _label(pair, pair_where),
                                pair_where))
    return examples


def _attribute(element: ElementTree.Element, name: str, where: str) -> str:
    value = element.get(name)
    if value is None:
        raise DatasetError(f"{where}: <{element.tag}> has no {name!r} attribute")
    return value


def _span(entity: ElementTree.Element, text: str, where: str) -> Span:
    """The entity's full span, half-open, after checking its offsets against the sentence and its
    `text` (a mismatch means shifted offsets: masking them would cut words apart)."""
    offsets = _attribute(entity, "charOffset", where)
    fragments = []
    for fragment in offsets.split(";"):
        start, dash, end = fragment.strip().partition("-")
        if not (dash and start.isdigit() and end.isdigit()) or int(start) > int(end):
            raise DatasetError(f"{where}: charOffset {offsets!r}: expected 'start-end' (both inclusive) or "
                               f"fragments 'start-end;start-end'")
        fragments.append((int(start), int(end) + 1))
    if max(end for _, end in fragments) > len(text):
        raise DatasetError(f"{where}: charOffset {offsets!r} is outside the sentence ({len(text)} characters)")
    mention = _attribute(entity, "text", where)
    shift = next((d for d in SHIFTS if _holds(text, [(a + d, b + d) for a, b in fragments], mention)), None)
    if shift is None:
        held = " ".join(text[start:end] for start, end in fragments)
        raise DatasetError(f"{where}: charOffset {offsets!r} holds {held!r}, but the entity's text is {mention!r}")
    if shift:
        log.warning("%s: charOffset %r is %+d characters off its text %r; read shifted", where, offsets, -shift,
                    mention)
    return min(start for start, _ in fragments) + shift, max(end for _, end in fragments) + shift


def _holds(text: str, fragments: list[Span], mention: str) -> bool:
    """Whether the fragments of the sentence spell the mention (a discontinuous one: its fragments joined
    by a space)."""
    if min(start for start, _ in fragments) < 0 or max(end for _, end in fragments) > len(text):
        return False
    held = " ".join(text[start:end] for start, end in fragments)
    return held == mention if len(fragments) == 1 else held.split() == mention.split()


def _entity(pair: ElementTree.Element, key: str, spans: dict[str, Span], where: str, sentence_id: str) -> Span:
    name = _attribute(pair, key, where)
    if name not in spans:
        raise DatasetError(f"{where}: {key}={name!r} is not an entity of sentence {sentence_id}")
    return spans[name]


def _label(pair: ElementTree.Element, where: str) -> str:
    """DDI-<type> for a true pair, DDI-false otherwise (a false pair's `type`, if any, is not read)."""
    ddi = _attribute(pair, "ddi", where).lower()
    if ddi == "false":
        return NEGATIVE
    if ddi != "true":
        raise DatasetError(f"{where}: ddi={ddi!r}, expected 'true' or 'false'")
    kind = pair.get("type")
    if kind not in TYPES:
        got = f"type {kind!r}" if kind is not None else "no type"
        raise DatasetError(f"{where}: a true pair with {got}, expected a type of {', '.join(TYPES)}")
    return f"DDI-{kind}"


class DdiXmlOptions(SplitOptions):
    entity_markers: Literal["mask", "tags"] = Field(
        "mask", description="How a pair's two drugs appear in its sentence. mask: each one's text replaced by "
        "@DRUG$ (BLUE/BLURB; other drug mentions stay); tags: [E1] ... [/E1] and [E2] ... [/E2] around them. "
        "A discontinuous mention is marked over its full span.")


class DdiXmlFormat(Format):
    Options = DdiXmlOptions

    def entry_problems(self, dataset) -> list[str]:
        if dataset.train and dataset.test:
            return []
        return ["train: format 'ddi_xml' reads folders of XML files: set `train` and `test` (and `dev`, or "
                "`split` for a seeded dev split of the training documents)"]

    def files(self, dataset, resolve: Resolve) -> list[Path]:
        return [resolve(name) for name in (dataset.train, dataset.dev, dataset.test) if name]

    def splits(self, dataset, resolve: Resolve, fold: int | None = None) -> dict[str, list]:
        style = self.options.entity_markers
        folders = {"train": dataset.train, "test": dataset.test, **({"dev": dataset.dev} if dataset.dev else {})}
        read = read_each({split: (lambda folder=folder: read_folder(resolve(folder), style))
                          for split, folder in folders.items()})
        documents = read["train"]
        if dataset.dev:
            parts, dev = {"train": list(documents)}, list(read["dev"].values())
        else:
            parts = split_ids(list(documents), {"dev": self.options.split.dev}, self.options.split.seed)
            dev = [documents[name] for name in parts["dev"]]
        return {"train": [e for name in parts["train"] for e in documents[name]],
                "dev": [e for examples in dev for e in examples],
                "test": [e for examples in read["test"].values() for e in examples]}
