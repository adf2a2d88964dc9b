"""MEDLINE/PubMed XML (baseline and update files, .xml or .xml.gz), streamed with lxml.iterparse."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from bioray.corpus.records import Document, Quarantined

READ_BYTES = 1 << 16  # XML fed to the parser at once


def _text(element) -> str:
    """All text inside an element (inline markup such as <i> or <sup> kept as plain text)."""
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _abstract(article) -> str:
    """Abstract text; structured abstracts keep their section labels ("METHODS: ...")."""
    parts = []
    for node in article.iterfind(".//Abstract/AbstractText"):
        body = _text(node)
        label = node.get("Label")
        if body:
            parts.append(f"{label}: {body}" if label else body)
    return "\n".join(parts)


def _date(citation) -> str | None:
    for path in ("DateCompleted", "DateRevised", ".//PubDate"):
        node = citation.find(path)
        if node is not None and node.findtext("Year"):
            month = node.findtext("Month") or "01"
            day = node.findtext("Day") or "01"
            return f"{node.findtext('Year')}-{month}-{day}"
    return None


def _record(source: str, element) -> Document:
    citation = element.find("MedlineCitation")
    pmid_node = citation.find("PMID")
    article = citation.find("Article")
    title = _text(article.find("ArticleTitle")) if article is not None else ""
    abstract = _abstract(article) if article is not None else ""
    metadata = {
        "language": article.findtext("Language") if article is not None else None,
        "date": _date(citation),
        "mesh": [_text(d) for d in citation.iterfind("MeshHeadingList/MeshHeading/DescriptorName")],
        "journal": _text(article.find("Journal/Title")) if article is not None else None,
    }
    return Document(source, f"pmid:{pmid_node.text.strip()}", int(pmid_node.get("Version", "1")),
                    "\n".join(t for t in (title, abstract) if t), json.dumps(metadata))


def _checked_record(source: str, element, index: int) -> Document | Quarantined:
    pmid = (element.findtext("MedlineCitation/PMID") or "").strip()
    where = f"PubmedArticle {index}" + (f" (PMID {pmid})" if pmid else "")
    if not pmid:
        return Quarantined(where, "no MedlineCitation/PMID")
    record = _record(source, element)
    if not record.text:
        return Quarantined(where, "no title or abstract text")
    return record


def read_medline(path: Path, source: str) -> Iterator[Document | Quarantined]:
    """Yield one record per PubmedArticle and one deletion record per PMID in a DeleteCitation.

    Elements are cleared as soon as they are read, so memory stays flat on 30k-article files. An
    article without a PMID or without any text is quarantined; the next one is read.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    # Fed in chunks, not iterparse: on a syntax error a pull parser still hands over the articles that
    # closed before it (lxml 6.2's iterparse raises first, so a small file lost its good articles too).
    parser = etree.XMLPullParser(events=("end",), tag=("PubmedArticle", "DeleteCitation"))
    articles = 0
    with opener(path, "rb") as stream:
        while True:
            chunk, error = b"", None
            try:  # read1: what is decompressed so far, so a truncated .gz still gives up its good part
                chunk = stream.read1(READ_BYTES)
                if chunk:
                    parser.feed(chunk)
                else:
                    parser.close()
            except (etree.XMLSyntaxError, EOFError, OSError) as failed:
                error = failed
            for _, element in parser.read_events():
                if element.tag == "PubmedArticle":
                    articles += 1
                    yield _checked_record(source, element, articles)
                else:
                    for pmid in element.iterfind("PMID"):
                        yield Document(source, f"pmid:{pmid.text.strip()}", int(pmid.get("Version", "1")), "",
                                       deleted=True)
                element.clear()
                while element.getprevious() is not None:  # drop already-read siblings from the root
                    del element.getparent()[0]
            if error is not None:
                raise error
            if not chunk:
                return
