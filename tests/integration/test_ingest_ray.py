"""Ingest on a real local Ray: deletions, later versions, exact duplicates, and a corrupt file quarantined."""

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from bioray.data.ingest import run_ingest
from bioray.pipeline.inputs import load_checked


def _article(pmid: str, version: int, title: str, abstract: str) -> str:
    return (f"<PubmedArticle><MedlineCitation><PMID Version=\"{version}\">{pmid}</PMID><Article>"
            f"<ArticleTitle>{title}</ArticleTitle><Abstract><AbstractText>{abstract}</AbstractText></Abstract>"
            f"<Language>eng</Language></Article></MedlineCitation></PubmedArticle>")


def _medline(path, body: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(f"<?xml version=\"1.0\"?><PubmedArticleSet>{body}</PubmedArticleSet>")


def test_ingest_applies_updates_and_quarantines_a_corrupt_file(ray_session, tmp_path, quickstart_tree, data_root):
    raw = tmp_path / "raw"
    raw.mkdir()
    _medline(raw / "pubmed26n0001.xml.gz",
             _article("1", 1, "Old title.", "Aspirin lowers fever in adults. It was well tolerated.")
             + _article("2", 1, "To be deleted.", "This citation is withdrawn later by NLM.")
             + _article("3", 1, "Kept.", "Metformin reduces glucose. Patients improved markedly."))
    _medline(raw / "pubmed26n0002.xml.gz",
             _article("1", 1, "New title.", "Aspirin lowers fever in adults. It was well tolerated.")
             + "<DeleteCitation><PMID Version=\"1\">2</PMID></DeleteCitation>"
             + _article("4", 1, "Kept.", "Metformin reduces glucose. Patients improved "
                                         "markedly."))  # same text as PMID 3
    (raw / "pubmed26n0003.xml.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")
    tree = {**quickstart_tree, "data_root": str(data_root), "workdir": str(tmp_path / "work"),
            "ingest": {"sources": [{"name": "pubmed", "format": "medline", "path": str(raw)}]}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(tree))
    config = load_checked(tmp_path / "wf.yaml")
    out = tmp_path / "out"
    out.mkdir()
    metrics = run_ingest(config.ingest, Path(config.data_root), out)

    table = pq.read_table(out / "documents").to_pandas().sort_values("doc_id")
    assert list(table["doc_id"]) == ["pmid:1", "pmid:3"]  # 2 deleted, 4 an exact duplicate of 3
    assert table.iloc[0]["text"].startswith("New title.")  # the later file wins
    text = table.iloc[0]["text"]
    sentences = [text[s:e] for s, e in zip(table.iloc[0]["sentence_starts"], table.iloc[0]["sentence_ends"])]
    assert sentences == ["New title.", "Aspirin lowers fever in adults.", "It was well tolerated."]
    quarantine = json.loads((out / "quarantine.json").read_text())
    assert len(quarantine) == 1 and quarantine[0]["file"].endswith("pubmed26n0003.xml.gz")
    assert quarantine[0]["location"] == "start of file"
    assert metrics["ingest/quarantined_files"] == 1 and metrics["ingest/documents"] == 2
    assert metrics["ingest/sentences"] == 3 + 3


def test_planted_bad_files_are_reported_and_every_good_document_kept(ray_session, tmp_path, quickstart_tree, data_root):
    raw = tmp_path / "raw"
    raw.mkdir()
    many = "".join(_article(str(1000 + i), 1, f"Study {i} of drug {i * 7}.", f"Outcome {i} improved in {i} patients.")
                   for i in range(600))
    whole = gzip.compress(f"<PubmedArticleSet>{many}</PubmedArticleSet>".encode())
    (raw / "a_truncated.xml.gz").write_bytes(whole[: int(len(whole) * 0.8)])  # a download cut short
    (raw / "b_malformed.xml").write_text("<PubmedArticleSet>" + _article("1", 1, "Complete article.", "It parses fine.")
                                         + "<PubmedArticle><MedlineCitation><PMID>2</PMID></Broken></PubmedArticleSet>")
    (raw / "c_not_xml.xml").write_text("PMID- 12345\nTI  - a MEDLINE text export, not XML\n")
    (raw / "d_empty_abstract.xml").write_text("<PubmedArticleSet>" + _article("3", 1, "", "")
                                              + _article("4", 1, "Title kept.", "Abstract kept.")
                                              + "</PubmedArticleSet>")
    text = tmp_path / "abstracts.txt"
    text.write_bytes(b"First good abstract about asthma.\nLatin-1 \xe9t\xe9 line.\nThird good abstract about gout.\n")

    tree = {**quickstart_tree, "data_root": str(data_root), "workdir": str(tmp_path / "work"),
            "ingest": {"sources": [{"name": "pubmed", "format": "medline", "path": str(raw)},
                                   {"name": "text", "format": "text", "path": str(text)}]}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(tree))
    out = tmp_path / "out"
    out.mkdir()
    config = load_checked(tmp_path / "wf.yaml")
    metrics = run_ingest(config.ingest, Path(config.data_root), out)

    report = {(Path(q["file"]).name, q["location"]): q["error"]
              for q in json.loads((out / "quarantine.json").read_text())}
    truncated = [(loc, err) for (name, loc), err in report.items() if name == "a_truncated.xml.gz"]
    assert len(truncated) == 1 and truncated[0][0].startswith("after record ")
    kept_from_truncated = int(truncated[0][0].split()[-1])
    assert 0 < kept_from_truncated < 600
    assert report[("b_malformed.xml", "after record 1")].startswith("XMLSyntaxError")
    assert report[("c_not_xml.xml", "start of file")].startswith("XMLSyntaxError")
    assert report[("d_empty_abstract.xml", "PubmedArticle 1 (PMID 3)")] == "no title or abstract text"
    assert "not UTF-8" in report[("abstracts.txt", "line 2")]
    assert len(report) == 5

    ids = set(pq.read_table(out / "documents", columns=["doc_id"]).column("doc_id").to_pylist())
    assert {"pmid:1", "pmid:4", "text:abstracts.txt:1", "text:abstracts.txt:3"} <= ids
    assert len([i for i in ids if i.startswith("pmid:1") and len(i) == 9]) == kept_from_truncated  # pmid:1000..
    assert metrics["ingest/quarantined_records"] == 5 and metrics["ingest/quarantined_files"] == 5


def _table(directory):
    frame = pq.read_table(directory).to_pandas().sort_values("doc_id").reset_index(drop=True)
    return frame.assign(sentence_starts=frame["sentence_starts"].map(list),
                        sentence_ends=frame["sentence_ends"].map(list))


def test_incremental_ingest_equals_full_rebuild(ray_session, tmp_path):
    from bioray.config import IngestConfig, SourceConfig

    raw = tmp_path / "raw"
    raw.mkdir()
    _medline(raw / "pubmed26n0001.xml.gz",
             _article("1", 1, "Aspirin.", "Aspirin lowers fever. It was tolerated.")
             + _article("2", 1, "Statins.", "Statins lower cholesterol.")
             + _article("3", 1, "Same.", "Identical abstract text here.")
             + _article("4", 1, "Same.", "Identical abstract text here."))  # duplicate of 3: dropped while 3 exists
    _medline(raw / "pubmed26n0002.xml.gz", _article("5", 1, "Gout.", "Urate crystals cause gout."))
    ingest = IngestConfig(sources=[SourceConfig(name="pubmed", format="medline", path=str(raw))])
    first = tmp_path / "first"
    first.mkdir()
    run_ingest(ingest, tmp_path, first)
    assert set(_table(first / "documents")["doc_id"]) == {"pmid:1", "pmid:2", "pmid:3", "pmid:5"}

    # NLM publishes an update: a new version of 1, PMID 2 and 3 deleted, a new PMID 6
    _medline(raw / "pubmed26n0003.xml.gz",
             _article("1", 2, "Aspirin, revised.", "Aspirin lowers fever in children. It was tolerated.")
             + "<DeleteCitation><PMID Version=\"1\">2</PMID><PMID Version=\"1\">3</PMID></DeleteCitation>"
             + _article("6", 1, "Asthma.", "Inhaled steroids help asthma."))
    incremental = tmp_path / "incremental"
    incremental.mkdir()
    metrics = run_ingest(ingest, tmp_path, incremental, [first])
    rebuild = tmp_path / "rebuild"
    rebuild.mkdir()
    run_ingest(ingest, tmp_path, rebuild)

    assert metrics["ingest/files_parsed"] == 1 and metrics["ingest/files_reused"] == 2
    got, expected = _table(incremental / "documents"), _table(rebuild / "documents")
    # is_new: from a file this run parsed (the rebuild parsed them all)
    assert list(got["is_new"]) == [True, False, False, True] and expected["is_new"].all()
    assert metrics["ingest/documents_new"] == 2
    assert got.drop(columns="is_new").equals(expected.drop(columns="is_new"))
    assert list(got["doc_id"]) == ["pmid:1", "pmid:4", "pmid:5", "pmid:6"]  # 4 is back: its twin 3 was deleted
    assert got.iloc[0]["text"].startswith("Aspirin, revised.")

    # A changed earlier file makes an incremental run impossible: it rebuilds in full
    _medline(raw / "pubmed26n0001.xml.gz", _article("1", 1, "Changed.", "The baseline file was replaced."))
    again = tmp_path / "again"
    again.mkdir()
    assert run_ingest(ingest, tmp_path, again, [first, incremental])["ingest/files_reused"] == 0


def test_bucketed_deduplication_equals_a_plain_reference(ray_session, tmp_path):
    """Random versions, deletions and duplicate texts over three update files and 16 buckets: ingest
    keeps exactly what one pass over all records in memory keeps (incremental runs: the test above)."""
    import random

    from bioray.config import IngestConfig, SourceConfig

    rng = random.Random(7)
    pool = [(f"Title {i}.", f"Abstract number {i} about a disease and its treatment.") for i in range(12)]
    raw = tmp_path / "raw"
    raw.mkdir()
    latest: dict[str, tuple] = {}  # pmid -> (title, abstract) or None when deleted
    for number in range(1, 4):
        body, versions = "", {}
        for _ in range(30):
            pmid = str(rng.randint(1, 40))
            if rng.random() < 0.15:
                body += f'<DeleteCitation><PMID Version="1">{pmid}</PMID></DeleteCitation>'
                latest[pmid] = None
                continue
            version = versions[pmid] = versions.get(pmid, 0) + 1
            title, abstract = rng.choice(pool)
            body += _article(pmid, version, title, abstract)
            latest[pmid] = (title, abstract)
        _medline(raw / f"pubmed26n{number:04d}.xml.gz", body)
    owner: dict[tuple, str] = {}
    for pmid, text in latest.items():
        if text is not None and (text not in owner or f"pmid:{pmid}" < owner[text]):
            owner[text] = f"pmid:{pmid}"

    (tmp_path / "full").mkdir()
    ingest = IngestConfig(sources=[SourceConfig(name="pubmed", format="medline", path=str(raw))])
    metrics = run_ingest(ingest, tmp_path, tmp_path / "full")
    full = _table(tmp_path / "full" / "documents")
    assert metrics["ingest/buckets"] == 16 and metrics["ingest/nodes"] == 1
    assert sorted(full["doc_id"]) == sorted(owner.values())
    texts = {doc_id: text for text, doc_id in owner.items()}
    assert all(row.text.startswith(texts[row.doc_id][0]) for row in full.itertuples())
    assert not any(p.name.startswith("_") for p in (tmp_path / "full").iterdir())  # scratch removed
    # one scratch file per input file, two per bucket at most (hand-off, kept): never files x buckets
    assert metrics["ingest/scratch_files"] <= 3 + 2 * 16


def test_duplicates_across_sources_and_parse_chunks_keep_the_smallest_id(ray_session, tmp_path):
    """A JSON Lines file of 9,000 records (three parse chunks, merged into one file sorted by bucket)
    and a text file repeating some of its texts in another case and spacing: one document per text,
    the smallest id, whichever source or chunk it came from."""
    from bioray.config import IngestConfig, SourceConfig

    texts = [f"Study {i} of drug {i % 1000} in {i} patients." for i in range(9000)]
    with open(tmp_path / "a.jsonl", "w") as out:
        out.writelines(json.dumps({"id": f"{i:05d}", "text": text}) + "\n" for i, text in enumerate(texts))
    repeated = [0, 4095, 4096, 8999]  # first and last of a chunk, and of the file
    own = "A text of its own, about gout and urate crystals.\n"
    (tmp_path / "b.txt").write_text("".join(f"  {texts[i].upper()}\n" for i in repeated) + own)
    ingest = IngestConfig(sources=[SourceConfig(name="zz", format="jsonl", path="a.jsonl"),
                                   SourceConfig(name="aa", format="text", path="b.txt")])
    (tmp_path / "out").mkdir()
    metrics = run_ingest(ingest, tmp_path, tmp_path / "out")

    ids = pq.read_table(tmp_path / "out" / "documents", columns=["doc_id"]).column("doc_id").to_pylist()
    expected = ({f"zz:{i:05d}" for i in range(9000) if i not in repeated}
                | {f"aa:b.txt:{line}" for line in range(1, 6)})  # "aa:..." < "zz:...": the text file's copies win
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert metrics["ingest/records_parsed"] == 9005 and metrics["ingest/scratch_files"] <= 2 + 2 * 16
