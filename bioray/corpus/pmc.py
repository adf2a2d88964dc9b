"""PMC Open Access JATS XML (.nxml): title, abstract and body paragraphs by section.

Tables, figures, formulas and reference lists are left out: they are not running text.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from bioray.corpus.records import Document, Quarantined

SKIPPED = {"table-wrap", "table", "fig", "disp-formula", "inline-formula", "ref-list", "xref", "graphic",
           "media", "supplementary-material", "tex-math", "{http://www.w3.org/1998/Math/MathML}math"}


def _clean_text(element) -> str:
    """Text of an element without the text inside skipped children (their tails are kept)."""
    parts = [element.text or ""]
    for child in element:
        if child.tag not in SKIPPED:
            parts.append(_clean_text(child))
        parts.append(child.tail or "")
    return " ".join("".join(parts).split())


def _paragraphs(container) -> list[str]:
    """Paragraphs of a section tree, with each section's title before its paragraphs."""
    out = []
    for node in container.iter("title", "p"):
        if any(a.tag in SKIPPED for a in node.iterancestors()):
            continue
        text = _clean_text(node)
        if text:
            out.append(text)
    return out


def parse_jats(root, source: str) -> Document:
    meta = root.find("front/article-meta")
    if meta is None:
        raise ValueError("not a JATS article: no front/article-meta")
    ids = {node.get("pub-id-type"): (node.text or "").strip() for node in meta.iterfind("article-id")}
    doc_id = next((f"{kind}:{ids[kind]}" for kind in ("pmc", "pmcid", "pmid", "doi", "publisher-id") if ids.get(kind)),
                  None)
    if doc_id is None:
        raise ValueError("no article-id")
    title_node = meta.find("title-group/article-title")
    title = _clean_text(title_node) if title_node is not None else ""
    abstract = [p for a in meta.iterfind("abstract") for p in _paragraphs(a)]
    body = root.find("body")
    sections = _paragraphs(body) if body is not None else []
    text = "\n".join([title, *abstract, *sections]).strip()
    metadata = {"ids": ids, "journal": root.findtext("front/journal-meta/journal-title-group/journal-title")}
    return Document(source, doc_id, 1, text, json.dumps(metadata))


def _parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def read_pmc_package(path: Path, source: str) -> Iterator[Document | Quarantined]:
    """A PMC OA `.tar.gz` package, streamed member by member: one record per `.nxml` inside."""
    with tarfile.open(path, "r|gz") as package:
        for member in package:
            if not (member.isfile() and member.name.endswith(".nxml")):
                continue
            if member.name.startswith("/") or ".." in Path(member.name).parts:
                yield Quarantined(member.name, "unsafe member path (absolute or with '..'): refused")
                continue
            try:
                yield parse_jats(etree.fromstring(package.extractfile(member).read(), _parser()), source)
            except (etree.XMLSyntaxError, ValueError) as exc:
                yield Quarantined(member.name, f"{type(exc).__name__}: {exc}")


def read_pmc(path: Path, source: str) -> Iterator[Document | Quarantined]:
    """One record per article: an .nxml file holds one, an efetch `pmc-articleset` several, a
    `.tar.gz` OA package one per .nxml member.

    PMC articles are a few hundred KB, so each is parsed whole.
    """
    if path.name.endswith(".tar.gz"):
        yield from read_pmc_package(path, source)
        return
    root = etree.parse(str(path), _parser()).getroot()
    if root.tag != "pmc-articleset":
        yield parse_jats(root, source)
        return
    for index, article in enumerate(root.iterfind("article"), start=1):
        try:
            yield parse_jats(article, source)
        except ValueError as exc:
            yield Quarantined(f"article {index}", str(exc))
