"""Hostile input: archives whose members point outside, XML external entities, empty files, a file that
is one huge line, checkpoints that hold a pickle, a listing whose object name is a path, workflow files
built to exhaust the YAML loader (aliases of aliases, deep nesting, huge values, binary). Each is refused with a clear
record or error, and nothing is written, read or executed where it should not be."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import time

import pytest
import torch
from transformers import BertConfig

from bioray.config import SourceConfig
from bioray.corpus.pmc import read_pmc
from bioray.corpus.records import Document, Quarantined
from bioray.data.ingest import SourceFile, _read_file
from bioray.model.encoder import build_mlm_model
from tests.test_fetch import S3LikeServer, _serving


def _package(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as package:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            package.addfile(info, io.BytesIO(content))


def test_archive_members_outside_the_package_are_refused(tmp_path, data_root):
    article = (data_root / "pubmed-raw/pmc_oa_nxml/1471-2180-11-174.nxml").read_bytes()
    target = tmp_path / "corpus"
    target.mkdir()
    _package(target / "oa.tar.gz", {"../escape.nxml": article, "/tmp/absolute.nxml": article,
                                    "PMC1/good.nxml": article})
    records = list(read_pmc(target / "oa.tar.gz", "pmc"))
    refused = [r for r in records if isinstance(r, Quarantined)]
    assert [r.location for r in refused] == ["../escape.nxml", "/tmp/absolute.nxml"]
    assert all("unsafe member path" in r.error for r in refused)
    assert len([r for r in records if isinstance(r, Document)]) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["corpus", "oa.tar.gz"]  # nothing extracted anywhere


def test_xml_external_entities_are_never_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("contents-of-a-private-file")
    hostile = tmp_path / "pubmed26n0001.xml.gz"
    hostile.write_bytes(gzip.compress(
        f'<?xml version="1.0"?><!DOCTYPE PubmedArticleSet [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">1</PMID><Article>'
        '<ArticleTitle>Aspirin and fever.</ArticleTitle><Abstract><AbstractText>Leak &x; here.</AbstractText>'
        '</Abstract></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>'.encode()))
    rows = _rows(hostile, "medline")
    assert not any("contents-of-a-private-file" in str(row) for row in rows)
    assert [row["error"] != "" for row in rows] == [True]  # quarantined, with the parser's reason
    assert rows[0]["error"].startswith("XMLSyntaxError")


def _rows(path, fmt: str) -> list[dict]:
    """What ingest makes of one file: document rows and quarantine rows (error set)."""
    return list(_read_file(SourceFile(str(path), 0, SourceConfig(name="s", format=fmt, path=str(path))), buckets=1))


@pytest.mark.parametrize("name, content, fmt", [
    ("empty.txt", b"", "text"), ("empty.jsonl", b"", "jsonl"), ("empty.jsonl.gz", gzip.compress(b""), "jsonl"),
    ("empty.xml", b"", "medline"), ("zero-bytes.xml.gz", b"", "medline"), ("blank.txt", b"\n\n  \n", "text"),
])
def test_empty_corpus_files_are_reported_not_fatal(tmp_path, name, content, fmt):
    (tmp_path / name).write_bytes(content)
    (row,) = _rows(tmp_path / name, fmt)
    assert row["doc_id"] == "" and row["error"] and row["file"].endswith(name)
    assert row["error"] == "no records: the file is empty" or row["error"].startswith("XMLSyntaxError")


@pytest.mark.parametrize("fmt, good", [("text", b"A good abstract about asthma.\n"),
                                       ("jsonl", b'{"id": "a", "text": "A good abstract about asthma."}\n')])
def test_a_single_huge_line_is_quarantined_in_bounded_memory(tmp_path, fmt, good):
    import tracemalloc

    from bioray.corpus.text import MAX_LINE_BYTES

    path = tmp_path / f"corpus.{'txt' if fmt == 'text' else 'jsonl'}"
    with open(path, "wb") as out:  # a good line, then 100 MiB without a line break, then a good line
        out.write(good)
        for _ in range(100):
            out.write(b"x" * 2**20)
        out.write(b"\n" + good.replace(b'"a"', b'"b"'))
    tracemalloc.start()
    rows = _rows(path, fmt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [row["text"] for row in rows if not row["error"]] == ["A good abstract about asthma."] * 2
    (bad,) = [row for row in rows if row["error"]]
    assert bad["location"] == "line 2" and f"a line of {100 * 2**20 + 1} bytes" in bad["error"]
    assert peak < 2.5 * MAX_LINE_BYTES  # never the whole 100 MiB line at once: a chunk or two of it


class _Payload:
    """Unpickling this would run code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_holding_a_pickle_is_refused_unopened(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(str(checkpoint))
    marker = tmp_path / "code-ran"
    with open(checkpoint / "pytorch_model.bin", "wb") as stream:
        pickle.dump({"weight": _Payload(marker)}, stream)
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        build_mlm_model(vocab_size=10, pad_id=0, init_checkpoint=checkpoint)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint / "pytorch_model.bin", weights_only=True)
    assert not marker.exists()  # torch.load(weights_only=True), used for bioray's own RNG files, refuses it too


def test_checkpoint_with_missing_weights_names_the_directory(tmp_path):
    checkpoint = tmp_path / "half-copied"
    BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(str(checkpoint))
    with pytest.raises(OSError, match="half-copied"):
        build_mlm_model(vocab_size=10, pad_id=0, init_checkpoint=checkpoint)


def test_listing_object_named_like_a_path_is_refused(tmp_path):
    from bioray.corpus.fetch import fetch_s3_prefix

    objects = {"oa/..": b"would land in the parent directory", "oa/PMC1.xml": b"<article/>"}
    destination = tmp_path / "mirror"
    with _serving(S3LikeServer(objects)) as server:
        report = fetch_s3_prefix(f"http://127.0.0.1:{server.server_address[1]}/", "oa/", destination, suffixes=())
    assert report.downloaded == ["PMC1.xml"] and report.failed == {"oa/..": "unsafe object name: refused"}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["PMC1.xml", "mirror"]


# --- workflow files written by someone else -------------------------------------------------------

def _laughs(merge_keys: bool = False) -> str:
    """A 'billion laughs' in 12 lines: nine aliases of nine aliases of ... nine values (9**10 as built);
    with merge_keys, each level a mapping that merges the one before (`<<: *a`) and holds it 8 times more."""
    names = "abcdefghij"
    if merge_keys:
        lines = [f"a: &a {{{', '.join(f'k{i}: lol' for i in range(9))}}}"]
        lines += [f"{name}: &{name} {{<<: *{prev}, {', '.join(f'k{i}: *{prev}' for i in range(1, 9))}}}"
                  for prev, name in zip(names, names[1:])]
    else:
        lines = [f"a: &a [{', '.join(['lol'] * 9)}]"]
        lines += [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip(names, names[1:])]
    return "\n".join(["name: lol", *lines, "workdir: *j"]) + "\n"


HOSTILE_WORKFLOWS = {  # file name: (its content, what the one line says)
    "billion-laughs.yaml": (_laughs(), "aliases expand to more than 10,000 values"),
    "merge-key-laughs.yaml": (_laughs(merge_keys=True), "aliases expand to more than 10,000 values"),
    "deep-list.yaml": ("[" * 50_000 + "]" * 50_000, "nest"),  # libyaml's own limit (1000) or bioray's (64)
    "deep-mapping.yaml": ("{a: " * 50_000 + "1" + "}" * 50_000, "nested more than 64 levels deep"),
    "deep-indented.yaml": ("".join("  " * i + "a:\n" for i in range(500)) + "  " * 500 + "b: 1\n",
                           "nested more than 64 levels deep"),
    "deep-through-an-alias.yaml": ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30,
                                   "alias *a nests more than 64 levels deep"),
    "huge-scalar.yaml": ("workdir: " + "x" * 50 * 2**20, "bytes, over the 1,048,576 a workflow file may have"),
    "huge-file.yaml": ("# a comment\n" * 2**20, "bytes, over the 1,048,576 a workflow file may have"),
    "long-value.yaml": ("workdir: " + "x" * 900_000, "a value of 900,000 characters, over the 16,384"),
    "thousands-of-keys.yaml": ("pretrain:\n" + "".join(f"  key{i}: {i}\n" for i in range(5_000)),
                               "a mapping of more than 1,000 keys"),
    "one-long-line.yaml": ("finetune: {seeds: [" + ", ".join(map(str, range(100_000))) + "]}",
                           "a list of more than 1,000 items"),
    "many-aliases.yaml": ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]", "more than 100 aliases"),
    "recursive-alias.yaml": ("a: &a [1, *a]", "alias *a inside its own anchor"),
    "undefined-alias.yaml": ("a: *nothing", "alias *nothing names no anchor before it"),
    "binary.yaml": (bytes(range(256)) * 64, "not UTF-8 text (byte 0x80 at offset 128)"),
    "control-character.yaml": ("workdir: a\x00b", "not valid YAML: unacceptable character #x0000"),
    "python-object.yaml": ("workdir: !!python/object/apply:os.system ['touch {marker}']",
                           "could not determine a constructor for the tag"),
    "huge-integer.yaml": ("pretrain: {steps: " + "9" * 10_000 + "}", "a value YAML cannot build: Exceeds the limit"),
    "two-documents.yaml": ("workdir: a\n---\nworkdir: b", "expected a single document in the stream"),
}


@pytest.mark.parametrize("name", HOSTILE_WORKFLOWS)
def test_hostile_workflow_file_is_refused_fast_in_one_line(tmp_path, name):
    from click.testing import CliRunner

    from bioray.cli import main

    content, expected = HOSTILE_WORKFLOWS[name]
    workflow, marker = tmp_path / name, tmp_path / "code-ran"
    workflow.write_bytes(content if isinstance(content, bytes) else content.replace("{marker}", str(marker)).encode())
    started = time.perf_counter()
    done = CliRunner().invoke(main, ["validate", str(workflow)])
    elapsed = time.perf_counter() - started
    assert done.exit_code == 2, done.output
    (line,) = done.output.splitlines()
    assert line.startswith(f"error: {workflow}: ") and expected in line and len(line) < 400, line
    assert elapsed < 5, elapsed  # the target is under 1 s; measured 0.00-0.3 s
    assert not marker.exists()


@pytest.mark.parametrize("name", ["billion-laughs.yaml", "deep-list.yaml"])
def test_bioray_validate_refuses_a_hostile_workflow_with_exit_2(tmp_path, name):
    """The two files of the report, through the real `bioray validate`: exit 2, one line on stderr, no traceback."""
    from tests.support.cli import run_bioray

    workflow = tmp_path / name
    workflow.write_text(HOSTILE_WORKFLOWS[name][0])
    done = run_bioray("validate", str(workflow), timeout=120)  # was > 60 s (laughs) and RecursionError, exit 1
    assert done.returncode == 2 and done.stdout == "", done
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {workflow}: ") and HOSTILE_WORKFLOWS[name][1] in line, line


def test_yaml_limits_are_where_they_say_and_shared_settings_still_load():
    from bioray.config import MAX_YAML_ALIASES, MAX_YAML_DEPTH, ConfigError, apply_overrides, parse_yaml

    assert parse_yaml("[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH, "f")
    with pytest.raises(ConfigError, match=f"f: line 1: nested more than {MAX_YAML_DEPTH} levels deep"):
        parse_yaml("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "f")
    aliases = "a: &a 1\nb: [" + ", ".join(["*a"] * MAX_YAML_ALIASES) + "]"
    assert parse_yaml(aliases, "f")["b"] == [1] * MAX_YAML_ALIASES
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_ALIASES} aliases"):
        parse_yaml(aliases.replace("]", ", *a]"), "f")
    shared = parse_yaml("base: &base {lr: 3.0e-5, epochs: 3}\nner: {<<: *base, lr: 5.0e-5}\nre: *base", "f")
    assert shared["ner"] == {"lr": 5.0e-5, "epochs": 3} and shared["re"] == shared["base"]
    with pytest.raises(ConfigError, match=r"^--set finetune.lr: .*nest"):  # libyaml's own limit or bioray's
        apply_overrides({"finetune": {}}, ["finetune.lr=" + "[" * 5000 + "]" * 5000])
