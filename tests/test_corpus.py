import gzip
import json

import pytest

from bioray.corpus.files import list_source_files
from bioray.corpus.medline import read_medline
from bioray.corpus.pmc import read_pmc
from bioray.corpus.readers import read_documents
from bioray.corpus.records import Document, Quarantined
from bioray.corpus.sentences import sentence_spans
from bioray.corpus.text import read_jsonl, read_text_lines

MEDLINE = """<?xml version="1.0"?>
<PubmedArticleSet>
 <PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">
  <PMID Version="1">111</PMID>
  <DateCompleted><Year>2020</Year><Month>01</Month><Day>02</Day></DateCompleted>
  <Article><Journal><Title>J Test</Title></Journal>
   <ArticleTitle>BRCA1 and <i>breast</i> cancer.</ArticleTitle>
   <Abstract>
    <AbstractText Label="BACKGROUND">Mutations matter.</AbstractText>
    <AbstractText Label="METHODS">We sequenced 12 genes.</AbstractText>
   </Abstract>
   <Language>eng</Language>
  </Article>
  <MeshHeadingList>
   <MeshHeading><DescriptorName UI="D001943">Breast Neoplasms</DescriptorName></MeshHeading>
  </MeshHeadingList>
 </MedlineCitation></PubmedArticle>
 <PubmedArticle><MedlineCitation><PMID Version="2">222</PMID>
  <Article><ArticleTitle>Second.</ArticleTitle><Language>eng</Language></Article>
 </MedlineCitation></PubmedArticle>
 <DeleteCitation><PMID Version="1">333</PMID><PMID Version="1">444</PMID></DeleteCitation>
</PubmedArticleSet>
"""

JATS = """<?xml version="1.0"?>
<article xmlns:mml="http://www.w3.org/1998/Math/MathML"><front><journal-meta><journal-title-group>
<journal-title>PLoS One</journal-title></journal-title-group></journal-meta>
<article-meta><article-id pub-id-type="pmid">999</article-id><article-id pub-id-type="pmc">PMC42</article-id>
<title-group><article-title>Gene X in mice</article-title></title-group>
<abstract><p>We study gene X.</p></abstract></article-meta></front>
<body><sec><title>Introduction</title><p>Gene X is known <xref ref-type="bibr">[1]</xref> to matter.</p>
<table-wrap><table><tr><td>SECRET TABLE</td></tr></table></table-wrap>
<p>Value <disp-formula><mml:math>FORMULA</mml:math></disp-formula> rises.</p></sec></body>
<back><ref-list><ref>REFERENCE TEXT</ref></ref-list></back></article>
"""


def test_medline_record_fields_and_deletions(tmp_path):
    path = tmp_path / "pubmed26n0001.xml.gz"
    with gzip.open(path, "wt") as f:
        f.write(MEDLINE)
    records = list(read_medline(path, "pubmed"))
    assert [r.doc_id for r in records] == ["pmid:111", "pmid:222", "pmid:333", "pmid:444"]
    first = records[0]
    assert first.text == "BRCA1 and breast cancer.\nBACKGROUND: Mutations matter.\nMETHODS: We sequenced 12 genes."
    meta = json.loads(first.metadata)
    assert meta["language"] == "eng" and meta["mesh"] == ["Breast Neoplasms"] and meta["date"] == "2020-01-02"
    assert records[1].version == 2
    assert [r.deleted for r in records] == [False, False, True, True]


def test_real_medline_sample_parses(data_root):
    records = list(read_medline(data_root / "pubmed-raw/medline_xml/pubmed-29768149.xml", "pubmed"))
    assert len(records) == 1 and records[0].doc_id == "pmid:29768149"
    assert len(records[0].text) > 200


def test_jats_keeps_running_text_only(tmp_path):
    path = tmp_path / "a.nxml"
    path.write_text(JATS)
    (record,) = read_pmc(path, "pmc")
    assert record.doc_id == "pmc:PMC42"
    assert "Gene X in mice" in record.text and "We study gene X." in record.text
    assert "Gene X is known to matter." in record.text
    for hidden in ("SECRET TABLE", "FORMULA", "REFERENCE TEXT", "[1]"):
        assert hidden not in record.text


def test_real_pmc_samples_parse(data_root):
    folder = data_root / "pubmed-raw/pmc_oa_nxml"
    files = list_source_files(folder, "pmc")
    assert sorted(files) == sorted(folder.glob("*.nxml")) and len(files) >= 3
    for path in files:
        (record,) = read_pmc(path, "pmc")
        assert len(record.text) > 1000, path


def test_text_and_jsonl(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("first doc.\n\nsecond doc.\n")
    assert [r.doc_id for r in read_text_lines(text, "t")] == ["t:a.txt:1", "t:a.txt:3"]
    jsonl = tmp_path / "b.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.write(json.dumps({"id": "x1", "body": "hello world", "pmid": "5"}) + "\n")
    (record,) = read_jsonl(jsonl, "j", text_field="body")
    assert record.doc_id == "j:x1" and record.text == "hello world"
    assert json.loads(record.metadata) == {"pmid": "5"}


def test_bad_records_are_quarantined_one_by_one(tmp_path):
    text = tmp_path / "mixed.txt"
    text.write_bytes(b"good first line\nbad \xff\xfe bytes\ngood third line\n")
    records = list(read_text_lines(text, "t"))
    assert [r.text for r in records if isinstance(r, Document)] == ["good first line", "good third line"]
    (bad,) = [r for r in records if isinstance(r, Quarantined)]
    assert bad.location == "line 2" and "not UTF-8: byte 0xff at column 5" in bad.error

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "ok"}\n{not json\n{"text": ""}\n{"id": 3}\n')
    records = list(read_jsonl(jsonl, "j"))
    assert [r.text for r in records if isinstance(r, Document)] == ["ok"]
    assert [(q.location, q.error.split(" (")[0]) for q in records if isinstance(q, Quarantined)] == [
        ("line 2", "not valid JSON"), ("line 3", "no text in field 'text'"), ("line 4", "no text in field 'text'")]


def test_medline_article_without_pmid_or_text_is_quarantined(tmp_path):
    path = tmp_path / "m.xml"
    path.write_text("<PubmedArticleSet>"
                    "<PubmedArticle><MedlineCitation><Article><ArticleTitle>No "
                    "id.</ArticleTitle></Article></MedlineCitation></PubmedArticle>"
                    "<PubmedArticle><MedlineCitation><PMID>7</PMID><Article><Abstract><AbstractText></AbstractText></Abstract></Article></MedlineCitation></PubmedArticle>"
                    "<PubmedArticle><MedlineCitation><PMID>8</PMID><Article><ArticleTitle>Fine.</ArticleTitle></Article></MedlineCitation></PubmedArticle>"
                    "</PubmedArticleSet>")
    records = list(read_medline(path, "m"))
    assert [(q.location, q.error) for q in records if isinstance(q, Quarantined)] == [
        ("PubmedArticle 1", "no MedlineCitation/PMID"), ("PubmedArticle 2 (PMID 7)", "no title or abstract text")]
    assert [r.doc_id for r in records if isinstance(r, Document)] == ["pmid:8"]


def test_unreadable_gzip_raises(tmp_path):
    bad_gz = tmp_path / "broken.xml.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(EOFError):  # ingest keeps what parsed before and quarantines the rest of the file
        list(read_documents(bad_gz, "medline", "m"))


def test_sentence_spans_respect_abbreviations():
    text = "Title line\nThe dose, e.g. 5 mg, was given (Fig. 2). Patients improved. No harm."
    spans = sentence_spans(text)
    sentences = [text[s:e] for s, e in spans]
    assert sentences == ["Title line", "The dose, e.g. 5 mg, was given (Fig. 2).", "Patients improved.", "No harm."]


def test_pmc_tar_gz_package_is_streamed_member_by_member(tmp_path):
    import io
    import tarfile

    package = tmp_path / "oa_package.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        for name, body in [("PMC42/a.nxml", JATS.encode()), ("PMC42/figure.jpg", b"\xff\xd8"),
                           ("PMC43/broken.nxml", b"<article><front>")]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    records = list(read_documents(package, "pmc", "pmc"))
    assert [r.doc_id for r in records if isinstance(r, Document)] == ["pmc:PMC42"]
    (bad,) = [r for r in records if isinstance(r, Quarantined)]
    assert bad.location == "PMC43/broken.nxml" and bad.error.startswith("XMLSyntaxError")
    assert list_source_files(tmp_path, "pmc") == [package]


def test_blank_line_separated_text(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("Title one\nbody one.\n\n\nTitle two\nbody two.\n")
    records = list(read_documents(path, "text", "t", documents="blank_line"))
    assert [(r.doc_id, r.text) for r in records] == [("t:docs.txt:1", "Title one\nbody one."),
                                                            ("t:docs.txt:5", "Title two\nbody two.")]
