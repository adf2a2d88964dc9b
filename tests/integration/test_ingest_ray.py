"""Ingest on a real local Ray: deletions, later versions, exact duplicates, and a corrupt file quarantined."""

import gzip
import json

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from bioray.config import load_workflow
from bioray.data.ingest import run_ingest


def _article(pmid: str, version: int, title: str, abstract: str) -> str:
    return (f"<PubmedArticle><MedlineCitation><PMID Version=\"{version}\">{pmid}</PMID><Article>"
            f"<ArticleTitle>{title}</ArticleTitle><Abstract><AbstractText>{abstract}</AbstractText></Abstract>"
            f"<Language>eng</Language></Article></MedlineCitation></PubmedArticle>")


def _medline(path, body: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(f"<?xml version=\"1.0\"?><PubmedArticleSet>{body}</PubmedArticleSet>")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_ingest_applies_updates_and_quarantines_a_corrupt_file(local_ray, tmp_path, quickstart_tree, data_root):
    raw = tmp_path / "raw"
    raw.mkdir()
    _medline(raw / "pubmed26n0001.xml.gz",
             _article("1", 1, "Old title.", "Aspirin lowers fever in adults. It was well tolerated.")
             + _article("2", 1, "To be deleted.", "This citation is withdrawn later by NLM.")
             + _article("3", 1, "Kept.", "Metformin reduces glucose. Patients improved markedly."))
    _medline(raw / "pubmed26n0002.xml.gz",
             _article("1", 1, "New title.", "Aspirin lowers fever in adults. It was well tolerated.")
             + "<DeleteCitation><PMID Version=\"1\">2</PMID></DeleteCitation>"
             + _article("4", 1, "Kept.", "Metformin reduces glucose. Patients improved markedly."))  # same text as PMID 3
    (raw / "pubmed26n0003.xml.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")

    tree = {**quickstart_tree, "data_root": str(data_root), "workdir": str(tmp_path / "work"),
            "ingest": {"sources": [{"name": "pubmed", "format": "medline", "path": str(raw)}], "partitions": 2}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(tree))
    config = load_workflow(tmp_path / "wf.yaml")
    out = tmp_path / "out"
    out.mkdir()
    metrics = run_ingest(config, out)

    table = pq.read_table(out / "documents").to_pandas().sort_values("doc_id")
    assert list(table["doc_id"]) == ["pmid:1", "pmid:3"]  # 2 deleted, 4 an exact duplicate of 3
    assert table.iloc[0]["text"].startswith("New title.")  # the later file wins
    text = table.iloc[0]["text"]
    sentences = [text[s:e] for s, e in zip(table.iloc[0]["sentence_starts"], table.iloc[0]["sentence_ends"])]
    assert sentences == ["New title.", "Aspirin lowers fever in adults.", "It was well tolerated."]
    quarantine = json.loads((out / "quarantine.json").read_text())
    assert len(quarantine) == 1 and quarantine[0]["file"].endswith("pubmed26n0003.xml.gz")
    assert metrics["ingest/quarantined_files"] == 1 and metrics["ingest/documents"] == 2
    assert metrics["ingest/sentences"] == 3 + 3
