"""BioBERT/CoNLL NER files: `token<TAB>tag` lines, a blank line between sentences, `-DOCSTART-` lines
between documents (MTL-Bioinformatics-2016 files)."""

from __future__ import annotations

import re
from pathlib import Path

from bioray.tasks.examples import DatasetError, Sentence
from bioray.tasks.formats.base import PerFileFormat, require_file

_TAG = re.compile(r"^(O|[BIES](-.+)?)$")


def read_conll(path: Path) -> list[Sentence]:
    """The file's sentences; errors name the file and line."""
    require_file(path)
    sentences, words, tags, first_line = [], [], [], 0
    with open(path, encoding="utf-8") as stream:
        for line_no, line in enumerate(stream, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append(Sentence(words, tags, f"{path}:{first_line}"))
                    words, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0] or not parts[-1].strip():
                raise DatasetError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
            tag = parts[-1].strip()
            if not _TAG.match(tag):
                raise DatasetError(f"{path}:{line_no}: {tag!r} is not an IOB tag (O, B, I, B-type, I-type)")
            if not words:
                first_line = line_no
            words.append(parts[0])
            tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags, f"{path}:{first_line}"))
    if not sentences:
        raise DatasetError(f"{path}: no sentences")
    return sentences


class ConllFormat(PerFileFormat):
    def read(self, path: Path, dataset) -> list[Sentence]:
        return read_conll(path)
