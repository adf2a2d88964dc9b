"""The DDI 2013 corpus in its original XML release (format ddi_xml), on hand-built folders laid out as
the release is: one example per pair, five classes, entities masked or tagged, inclusive and
discontinuous offsets, a seeded dev split by document, and bad files naming file and element."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from bioray.config import DatasetConfig
from bioray.tasks.catalog import entry_problems
from bioray.tasks.examples import DatasetError
from bioray.tasks.metrics import relation_scores
from bioray.tasks.splits import load_splits

CLASSES = ["DDI-false", "DDI-mechanism", "DDI-effect", "DDI-advise", "DDI-int"]
DDI_TEST = "Test/Test for DDI Extraction task"


def sentence(sid: str, text: str, entities=(), pairs=()) -> str:
    """entities: (suffix, charOffset, text); pairs: (suffix, e1 suffix, e2 suffix, ddi, type or None)."""
    lines = [f"  <sentence id={quoteattr(sid)} text={quoteattr(text)}>"]
    lines += [f'    <entity id="{sid}.{e}" charOffset="{offset}" type="drug" text={quoteattr(name)}/>'
              for e, offset, name in entities]
    for p, e1, e2, ddi, kind in pairs:
        typed = f' type="{kind}"' if kind else ""
        lines.append(f'    <pair id="{sid}.{p}" e1="{sid}.{e1}" e2="{sid}.{e2}" ddi="{ddi}"{typed}/>')
    return "\n".join(lines + ["  </sentence>"])


def document(doc_id: str, *sentences: str) -> str:
    return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', f'<document id="{doc_id}">', *sentences,
                      "</document>"]) + "\n"


def write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


ASPIRIN = sentence("DDI-DrugBank.d1.s0", "Aspirin increases the effect of warfarin and heparin.",
                   [("e0", "0-6", "Aspirin"), ("e1", "32-39", "warfarin"), ("e2", "45-51", "heparin")],
                   [("p0", "e0", "e1", "true", "effect"), ("p1", "e0", "e2", "false", None),
                    ("p2", "e1", "e2", "false", None)])
# e1 is discontinuous ("calcium- ... antacids", its text the fragments joined by a space) and its
# full span holds e2: the pair (e1, e2) is nested
ANTACIDS = sentence("DDI-DrugBank.d3.s0", "Do not take tetracycline with calcium- and magnesium-containing antacids.",
                    [("e0", "12-23", "tetracycline"), ("e1", "30-37;64-71", "calcium- antacids"),
                     ("e2", "43-71", "magnesium-containing antacids")],
                    [("p0", "e0", "e1", "true", "advise"), ("p1", "e0", "e2", "true", "advise"),
                     ("p2", "e1", "e2", "false", None)])
# the pair's e1 stands after its e2 in the text
PROBENECID = sentence("DDI-MedLine.d4.s0", "Probenecid may interact with penicillin.",
                      [("e0", "0-9", "Probenecid"), ("e1", "29-38", "penicillin")], [("p0", "e1", "e0", "true", "int")])


@pytest.fixture
def corpus(tmp_path) -> Path:
    write(tmp_path / "Train/DrugBank/Aspirin_ddi.xml",
          document("DDI-DrugBank.d1", ASPIRIN, sentence("DDI-DrugBank.d1.s1", "No drug here.")))
    write(tmp_path / "Train/MedLine/12345.xml", document("DDI-MedLine.d2", sentence(
        "DDI-MedLine.d2.s0", "Ketoconazole inhibits the metabolism of midazolam.",
        [("e0", "0-11", "Ketoconazole"), ("e1", "40-48", "midazolam")], [("p0", "e0", "e1", "true", "mechanism")])))
    write(tmp_path / DDI_TEST / "DrugBank/Tetracycline_ddi.xml", document("DDI-DrugBank.d3", ANTACIDS))
    write(tmp_path / DDI_TEST / "MedLine/67890.xml", document("DDI-MedLine.d4", PROBENECID))
    return tmp_path


def _entry(root: Path, **fields) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "ddi", "task": "relation", "format": "ddi_xml",
                                         "train": str(root / "Train"), "test": str(root / DDI_TEST),
                                         "negative_label": "DDI-false", "labels": CLASSES, **fields})


def test_one_example_per_pair_with_the_five_classes(corpus):
    splits = load_splits(_entry(corpus, split={"dev": 0.0}), Path)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [4, 0, 4]
    assert Counter(e.label for e in splits["train"]) == {"DDI-false": 2, "DDI-effect": 1, "DDI-mechanism": 1}
    assert [e.label for e in splits["test"]] == ["DDI-advise", "DDI-advise", "DDI-false", "DDI-int"]
    assert splits["test"][3].where == f"{corpus / DDI_TEST}/MedLine/67890.xml: pair DDI-MedLine.d4.s0.p0"
    assert all(e.text_b is None for split in splits.values() for e in split)


def test_masking_replaces_the_pairs_two_drugs_only(corpus):
    splits = load_splits(_entry(corpus, split={"dev": 0.0}), Path)
    aspirin, test = [e for e in splits["train"] if "/Aspirin_ddi.xml:" in e.where], splits["test"]
    assert [e.text for e in aspirin] == [
        "@DRUG$ increases the effect of @DRUG$ and heparin.",
        "@DRUG$ increases the effect of warfarin and @DRUG$.",
        "Aspirin increases the effect of @DRUG$ and @DRUG$."]
    assert [e.text for e in test] == [
        "Do not take @DRUG$ with @DRUG$.",  # the discontinuous drug: its full span, words between included
        "Do not take @DRUG$ with calcium- and @DRUG$.",
        "Do not take tetracycline with @DRUG$ @DRUG$.",  # nested: the union, one placeholder per drug
        "@DRUG$ may interact with @DRUG$."]


def test_tags_mark_e1_and_e2_wherever_they_stand(corpus):
    test = load_splits(_entry(corpus, entity_markers="tags"), Path)["test"]
    assert [e.text for e in test] == [
        "Do not take [E1] tetracycline [/E1] with [E2] calcium- and magnesium-containing antacids [/E2].",
        "Do not take [E1] tetracycline [/E1] with calcium- and [E2] magnesium-containing antacids [/E2].",
        "Do not take tetracycline with [E1] calcium- and [E2] magnesium-containing antacids [/E2] [/E1].",
        "[E2] Probenecid [/E2] may interact with [E1] penicillin [/E1]."]


def test_tags_of_crossing_and_identical_spans():
    from bioray.tasks.formats.entity_markers import tag

    assert tag("abcdef", (0, 4), (2, 6)) == "[E1] ab[E2] cd [/E1]ef [/E2]"
    assert tag("ab cd", (0, 2), (0, 2)) == "[E1] [E2] ab [/E2] [/E1] cd"
    assert tag("ab cd", (3, 5), (0, 5)) == "[E2] ab [E1] cd [/E1] [/E2]"


def _training_documents(root: Path, count: int) -> None:
    """`count` documents of two sentences (one pair each), half DrugBank, half MedLine."""
    for d in range(count):
        source = "DrugBank" if d % 2 else "MedLine"
        sentences = [sentence(f"DDI-{source}.d{d}.s{s}", "Aspirin and warfarin.",
                              [("e0", "0-6", "Aspirin"), ("e1", "12-19", "warfarin")],
                              [("p0", "e0", "e1", "true" if s else "false", "effect" if s else None)])
                     for s in range(2)]
        write(root / "Train" / source / f"doc{d}.xml", document(f"DDI-{source}.d{d}", *sentences))


def _documents(examples) -> set[str]:
    return {e.where.split(": pair ")[0] for e in examples}


def test_seeded_dev_split_takes_whole_training_documents(corpus):
    _training_documents(corpus, 10)  # with the fixture's 2: 12 documents, 24 pairs
    entry = _entry(corpus, split={"dev": 0.25, "seed": 3})
    splits = load_splits(entry, Path)
    train, dev = _documents(splits["train"]), _documents(splits["dev"])
    assert len(dev) == 3 and len(train) == 9 and not train & dev
    assert len(splits["train"]) + len(splits["dev"]) == 24
    for name in dev - {str(corpus / "Train/DrugBank/Aspirin_ddi.xml"), str(corpus / "Train/MedLine/12345.xml")}:
        assert sum(e.where.startswith(name) for e in splits["dev"]) == 2  # both sentences of the document
    assert [e.where for e in load_splits(entry, Path)["dev"]] == [e.where for e in splits["dev"]]
    others = [_documents(load_splits(_entry(corpus, split={"dev": 0.25, "seed": s}), Path)["dev"]) for s in range(5)]
    assert any(other != dev for other in others)
    assert len(load_splits(entry, Path)["test"]) == 4  # the test folder is never split
    moved = shutil.copytree(corpus, corpus.parent / "elsewhere")  # the split is by path under the folder
    relative = {str(Path(name).relative_to(moved)) for name in _documents(load_splits(_entry(moved, split={
        "dev": 0.25, "seed": 3}), Path)["dev"])}
    assert relative == {str(Path(name).relative_to(corpus)) for name in dev}


def test_a_dev_folder_replaces_the_split(corpus):
    _training_documents(corpus / "Dev", 2)
    splits = load_splits(_entry(corpus, dev=str(corpus / "Dev/Train"), split={"dev": 0.5}), Path)
    assert len(splits["train"]) == 4 and len(splits["dev"]) == 4
    assert all("/Dev/Train/" in e.where for e in splits["dev"])


BAD_SENTENCE = ("DDI-DrugBank.d9.s0", "Aspirin increases the effect of warfarin and heparin.")


def _bad(entities=(("e0", "0-6", "Aspirin"), ("e1", "32-39", "warfarin")),
         pairs=(("p0", "e0", "e1", "true", "effect"),)) -> str:
    return document("DDI-DrugBank.d9", sentence(*BAD_SENTENCE, entities, pairs))


S, P = r"sentence DDI-DrugBank\.d9\.s0", r"pair DDI-DrugBank\.d9\.s0\.p0"


def test_offsets_a_character_off_their_text_are_read_where_the_text_is(tmp_path):
    """As in the release's Eszopiclone_ddi.xml (s16 e2: "95-98;107-114" for "96-99;108-115")."""
    shifted = _bad(entities=[("e0", "0-6", "Aspirin"), ("e1", "31-38", "warfarin")])  # warfarin is at 32-39
    write(tmp_path / "Train/DrugBank/shifted.xml", shifted)
    write(tmp_path / DDI_TEST / "DrugBank/ok.xml", document("DDI-DrugBank.d3", ANTACIDS))
    (example,) = load_splits(_entry(tmp_path, split={"dev": 0.0}), Path)["train"]
    assert example.text == "@DRUG$ increases the effect of @DRUG$ and heparin." and example.label == "DDI-effect"


@pytest.mark.parametrize("content, message", [
    ('<document id="d">\n  <sentence id="s0" text="x">\n    <entity id="e0"\n  </sentence>\n</document>\n',
     r"bad\.xml:4: malformed XML \(not well-formed"),
    (_bad(pairs=[("p0", "e0", "e9", "true", "effect")]),
     rf"bad\.xml: {P}: e2='DDI-DrugBank\.d9\.s0\.e9' is not an entity of {S}$"),
    (_bad(entities=[("e0", "0-6", "Aspirin"), ("e1", "45-60", "heparin.")]),
     rf"bad\.xml: {S}, entity {S[9:]}\.e1: charOffset '45-60' is outside the sentence \(53 characters\)"),
    (_bad(entities=[("e0", "10-16", "Aspirin"), ("e1", "32-39", "warfarin")]),
     rf"bad\.xml: {S}, entity {S[9:]}\.e0: charOffset '10-16' holds 'creases', but the entity's text is 'Aspirin'"),
    (_bad(entities=[("e0", "0-6;32-38", "Aspirin warfarin"), ("e1", "32-39", "warfarin")]),
     rf"bad\.xml: {S}, entity {S[9:]}\.e0: charOffset '0-6;32-38' holds 'Aspirin warfari', but the entity's text is "
     rf"'Aspirin warfarin'"),
    (_bad(entities=[("e0", "0:6", "Aspirin"), ("e1", "32-39", "warfarin")]),
     rf"bad\.xml: {S}, entity {S[9:]}\.e0: charOffset '0:6': expected 'start-end' \(both inclusive\)"),
    (_bad(pairs=[("p0", "e0", "e1", "true", "synergy")]),
     rf"bad\.xml: {P}: a true pair with type 'synergy', expected a type of mechanism, effect, advise, int"),
    (_bad(pairs=[("p0", "e0", "e1", "true", None)]), rf"bad\.xml: {P}: a true pair with no type"),
    (_bad(pairs=[("p0", "e0", "e1", "maybe", None)]), rf"bad\.xml: {P}: ddi='maybe', expected 'true' or 'false'"),
    (_bad().replace('ddi="true" type="effect"', 'interaction="true"'),  # the 2011 release's pairs
     rf"bad\.xml: {P}: <pair> has no 'ddi' attribute"),
    (_bad().replace("<document", "<corpus").replace("</document>", "</corpus>"),
     r"bad\.xml: expected a <document> root element, got <corpus>"),
])
def test_bad_files_name_the_file_and_element(tmp_path, content, message):
    write(tmp_path / "Train/DrugBank/bad.xml", content)
    write(tmp_path / DDI_TEST / "DrugBank/ok.xml", document("DDI-DrugBank.d3", ANTACIDS))
    with pytest.raises(DatasetError, match=message):
        load_splits(_entry(tmp_path), Path)


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "Train").mkdir(), r"Train: no \.xml files \(searched with its subfolders\)"),
    (lambda root: write(root / "Train", "a file"), r"Train: a file, where a folder of DDI XML files was expected"),
    (lambda root: None, r"Train: no such folder"),
    (lambda root: write(root / "Train/DrugBank/a.xml", document("d", sentence("d.s0", "No pair here."))),
     r"Train: no <pair> in its 1 XML files"),
])
def test_bad_folders_say_what_was_expected(tmp_path, make, message):
    make(tmp_path)
    write(tmp_path / DDI_TEST / "DrugBank/ok.xml", document("DDI-DrugBank.d3", ANTACIDS))
    with pytest.raises(DatasetError, match=message):
        load_splits(_entry(tmp_path), Path)


def test_every_broken_folder_is_named_at_once(tmp_path):
    (tmp_path / "Train").mkdir()  # and no test folder at all
    with pytest.raises(DatasetError) as raised:
        load_splits(_entry(tmp_path), Path)
    assert "Train: no .xml files" in str(raised.value) and "DDI Extraction task: no such folder" in str(raised.value)


def test_registry_entry_checks(tmp_path):
    assert entry_problems(_entry(tmp_path, test=None), "finetune.datasets[0]") == [
        "finetune.datasets[0].train: format 'ddi_xml' reads folders of XML files: set `train` and `test` (and "
        "`dev`, or `split` for a seeded dev split of the training documents)"]
    assert entry_problems(_entry(tmp_path), "d") == []
    assert "does not fit task 'ner'" in entry_problems(_entry(tmp_path, task="ner"), "d")[0]
    assert entry_problems(_entry(tmp_path, entity_markers="bold"), "d") == [
        "d.entity_markers: Input should be 'mask' or 'tags' (got 'bold')"]


def test_negative_label_gives_micro_f1_over_the_four_positive_classes():
    gold = ["DDI-mechanism", "DDI-mechanism", "DDI-effect", "DDI-effect", "DDI-advise", "DDI-int",
            "DDI-false", "DDI-false", "DDI-false", "DDI-false"]
    pred = ["DDI-mechanism", "DDI-effect", "DDI-effect", "DDI-false", "DDI-advise", "DDI-false",
            "DDI-false", "DDI-mechanism", "DDI-false", "DDI-false"]
    # counted by hand: right positives 0, 2, 4; predicted positives 0, 1, 2, 4, 7; gold positives 0-5.
    # Pair 1 (mechanism called effect) is both a false alarm and a miss; pair 7 a false alarm; 3, 5 misses.
    precision, recall = 3 / 5, 3 / 6
    scores = relation_scores(gold, pred, "DDI-false")
    assert scores == pytest.approx({"precision": precision, "recall": recall,
                                    "f1": 2 * precision * recall / (precision + recall)})  # 6/11
    assert scores["f1"] != pytest.approx(sum(g == p for g, p in zip(gold, pred)) / len(gold))  # not accuracy (0.6)
