"""`bioray fetch --source benchmarks` against a real HTTP server on loopback holding a mirror of the
files' hosts (built from the shared data's copies): the files land where the workflows read them, byte
for byte; a second run fetches nothing; a file whose bytes differ from its SHA-256 is refused and never
appears under its name; an unknown benchmark is a usage error."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from urllib.parse import urlparse

import pytest

from bioray.corpus.fetch import digest_of
from bioray.tasks.downloads import catalogue
from tests.support.cli import run_bioray

# the published files byte for byte: sample-data/'s NCBI-disease is a prefix of BioBERT's
needs_catalogued_files = pytest.mark.needs_data(*(path for entry in catalogue().values() for path in entry["files"]))


@pytest.fixture
def mirror(tmp_path, data_root):
    """A loopback server holding every catalogued file at its URL's path (raw.githubusercontent.com's layout)."""
    root = tmp_path / "mirror"
    for entry in catalogue().values():
        for relative, source in entry["files"].items():
            target = root / urlparse(source["url"]).path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_root / relative, target)
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *args: None}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@needs_catalogued_files
def test_the_shared_copies_are_the_catalogued_files(data_root):
    for entry in catalogue().values():
        for relative, source in entry["files"].items():
            assert digest_of(data_root / relative, "sha256") == source["sha256"], relative


@needs_catalogued_files
def test_fetch_benchmarks_from_a_mirror(tmp_path, data_root, mirror):
    root, url = mirror
    destination = tmp_path / "benchmarks"
    ncbi = catalogue()["ncbi-disease"]["files"]
    (root / urlparse(catalogue()["pubmedqa"]["files"]["PubMedQA/ori_pqal.json"]["url"]).path.lstrip("/")).write_text(
        "{}")  # the mirror serves a file that is not the published one

    done = run_bioray("fetch", str(destination), "--source", "benchmarks", "--url", url,
                      "--dataset", "ncbi-disease", "--dataset", "pubmedqa")
    assert done.returncode == 1, done.stderr[-3000:]  # one file failed
    report = json.loads(done.stdout)
    assert sorted(report["downloaded"]) == sorted([*ncbi, "PubMedQA/test_ground_truth.json"])
    assert list(report["failed"]) == ["PubMedQA/ori_pqal.json"]
    assert "SHA256" in report["failed"]["PubMedQA/ori_pqal.json"]
    assert not (destination / "PubMedQA" / "ori_pqal.json").exists()
    assert all((destination / p).read_bytes() == (data_root / p).read_bytes() for p in ncbi)

    again = run_bioray("fetch", str(destination), "--source", "benchmarks", "--url", url, "--dataset", "ncbi-disease")
    assert again.returncode == 0 and sorted(json.loads(again.stdout)["already_present"]) == sorted(ncbi)

    unknown = run_bioray("fetch", str(destination), "--source", "benchmarks", "--dataset", "ncbi")
    assert unknown.returncode == 2 and "unknown benchmark 'ncbi'; known: ncbi-disease" in unknown.stderr
