"""The fetcher against a real HTTP server on loopback that serves an NLM-style listing with Range support."""

import contextlib
import gzip
import hashlib
import http.server
import threading

import pytest

from bioray.corpus.fetch import ChecksumError, download, fetch_pubmed, list_pubmed_files


class NlmLikeServer(http.server.ThreadingHTTPServer):
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.bytes_sent: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        server: NlmLikeServer = self.server
        if name == "":
            body = "".join(f'<a href="{n}">{n}</a>\n' for n in server.files).encode()
            return self._send(200, body)
        if name not in server.files:
            return self._send(404, b"not found")
        body, status = server.files[name], 200
        ranged = self.headers.get("Range")
        if ranged:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return self._send(416, b"")
            body, status = body[start:], 206
        server.bytes_sent[name] = server.bytes_sent.get(name, 0) + len(body)
        self._send(status, body)

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _update_file(pmid: int) -> bytes:
    xml = (f"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>{pmid}</PMID></MedlineCitation>"
           "</PubmedArticle></PubmedArticleSet>")
    return gzip.compress(xml.encode() * 200, compresslevel=0)  # stored: big enough to cut in two


def _md5_file(name: str, content: bytes) -> bytes:
    return f"MD5({name})= {hashlib.md5(content).hexdigest()}\n".encode()


@contextlib.contextmanager
def _serving(server: http.server.ThreadingHTTPServer):
    """The server answering on a background thread until the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def nlm():
    files = {}
    for i in (1, 2):
        name = f"pubmed26n{i:04d}.xml.gz"
        files[name] = _update_file(i)
        files[name + ".md5"] = _md5_file(name, files[name])
    with _serving(NlmLikeServer(files)) as server:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/pubmed/updatefiles/"


def test_listing_names_in_order(nlm):
    _, url = nlm
    assert list_pubmed_files(url) == ["pubmed26n0001.xml.gz", "pubmed26n0002.xml.gz"]


def test_fetches_only_new_files_and_verifies_them(nlm, tmp_path):
    server, url = nlm
    first = fetch_pubmed(url, tmp_path)
    assert first.downloaded == ["pubmed26n0001.xml.gz", "pubmed26n0002.xml.gz"] and not first.failed
    assert (tmp_path / "pubmed26n0002.xml.gz").read_bytes() == server.files["pubmed26n0002.xml.gz"]

    name = "pubmed26n0003.xml.gz"  # NLM publishes a new update file
    server.files[name] = _update_file(3)
    server.files[name + ".md5"] = _md5_file(name, server.files[name])
    sent_before = dict(server.bytes_sent)
    second = fetch_pubmed(url, tmp_path)
    assert second.downloaded == [name]
    assert second.already_present == ["pubmed26n0001.xml.gz", "pubmed26n0002.xml.gz"]
    archives_before = {k: v for k, v in sent_before.items() if k.endswith(".xml.gz")}
    assert {k: v for k, v in server.bytes_sent.items() if k.endswith(".xml.gz")} == {
        **archives_before, name: len(server.files[name])}


def test_resumes_a_partial_download(nlm, tmp_path):
    server, url = nlm
    name = "pubmed26n0001.xml.gz"
    content = server.files[name]
    (tmp_path / (name + ".part")).write_bytes(content[:1000])
    report = fetch_pubmed(url, tmp_path, limit=1)
    assert report.resumed == [name]
    assert server.bytes_sent[name] == len(content) - 1000  # only the missing tail travelled
    assert (tmp_path / name).read_bytes() == content
    assert not (tmp_path / (name + ".part")).exists()


def test_checksum_mismatch_is_reported_and_nothing_is_committed(nlm, tmp_path):
    server, url = nlm
    server.files["pubmed26n0002.xml.gz.md5"] = _md5_file("pubmed26n0002.xml.gz", b"something else")
    report = fetch_pubmed(url, tmp_path)
    assert report.downloaded == ["pubmed26n0001.xml.gz"]
    assert "pubmed26n0002.xml.gz: MD5" in report.failed["pubmed26n0002.xml.gz"]
    assert not (tmp_path / "pubmed26n0002.xml.gz").exists() and not (tmp_path / "pubmed26n0002.xml.gz.part").exists()
    with pytest.raises(ChecksumError):
        download(f"{url}pubmed26n0002.xml.gz", tmp_path / "x.xml.gz", expected_md5="0" * 32)


def test_cli_fetch(nlm, tmp_path):
    import json

    from click.testing import CliRunner

    from bioray.cli import main

    _, url = nlm
    result = CliRunner().invoke(main, ["fetch", str(tmp_path / "mirror"), "--url", url])
    assert result.exit_code == 0, result.output
    # logs go to stderr
    assert json.loads(result.stdout)["downloaded"] == ["pubmed26n0001.xml.gz", "pubmed26n0002.xml.gz"]


class S3LikeServer(http.server.ThreadingHTTPServer):
    """Public-bucket ListObjectsV2 (2 keys a page, continuation tokens) and object GETs with Range."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.etags: dict[str, str] = {}
        self.bytes_sent: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _S3Handler)


class _S3Handler(_Handler):
    def do_GET(self):
        from urllib.parse import parse_qs, unquote, urlsplit

        server: S3LikeServer = self.server
        url = urlsplit(self.path)
        if url.path == "/" and "list-type=2" in url.query:
            query = parse_qs(url.query)
            keys = sorted(k for k in server.objects if k.startswith(query.get("prefix", [""])[0]))
            start = int(query.get("continuation-token", ["0"])[0])
            page, more = keys[start:start + 2], start + 2 < len(keys)
            contents = "".join(
                f"<Contents><Key>{k}</Key><Size>{len(server.objects[k])}</Size>"
                f"<ETag>&quot;{server.etags.get(k, hashlib.md5(server.objects[k]).hexdigest())}&quot;</ETag></Contents>"
                for k in page)
            token = f"<NextContinuationToken>{start + 2}</NextContinuationToken>" if more else ""
            body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                    f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{contents}{token}</ListBucketResult>")
            return self._send(200, body.encode())
        key = unquote(url.path.lstrip("/"))
        if key not in server.objects:
            return self._send(404, b"NoSuchKey")
        body = server.objects[key]
        server.bytes_sent[key] = server.bytes_sent.get(key, 0) + len(body)
        self._send(200, body)


def _article(pmcid: int) -> bytes:
    return (f"<article><front><article-meta><article-id pub-id-type='pmc'>PMC{pmcid}</article-id>"
            "</article-meta></front></article>").encode()


@pytest.fixture
def bucket():
    objects = {f"oa_comm/xml/all/PMC{i}.xml": _article(i) for i in range(1, 6)}
    objects["oa_comm/txt/all/PMC1.txt"] = b"plain text, another prefix"
    with _serving(S3LikeServer(objects)) as server:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/"


def test_pmc_bucket_listing_follows_pages_and_fetches_only_new_articles(bucket, tmp_path):
    from bioray.corpus.fetch import fetch_s3_prefix, list_s3_objects

    server, url = bucket
    listed = list_s3_objects(url, "oa_comm/xml/all/")
    assert [o.key for o in listed] == [f"oa_comm/xml/all/PMC{i}.xml" for i in range(1, 6)]  # 3 pages
    assert listed[0].md5 == hashlib.md5(_article(1)).hexdigest()

    first = fetch_s3_prefix(url, "oa_comm/xml/all/", tmp_path)
    assert first.downloaded == [f"PMC{i}.xml" for i in range(1, 6)] and not first.failed
    assert (tmp_path / "PMC3.xml").read_bytes() == _article(3)

    server.objects["oa_comm/xml/all/PMC6.xml"] = _article(6)  # a new article appears
    sent_before = dict(server.bytes_sent)
    second = fetch_s3_prefix(url, "oa_comm/xml/all/", tmp_path)
    assert second.downloaded == ["PMC6.xml"] and len(second.already_present) == 5
    assert {k: v - sent_before.get(k, 0) for k, v in server.bytes_sent.items() if v != sent_before.get(k)} == \
        {"oa_comm/xml/all/PMC6.xml": len(_article(6))}


def test_pmc_object_not_matching_its_etag_is_refused(bucket, tmp_path):
    from bioray.corpus.fetch import fetch_s3_prefix

    server, url = bucket
    server.etags["oa_comm/xml/all/PMC2.xml"] = hashlib.md5(b"what was published").hexdigest()
    server.etags["oa_comm/xml/all/PMC4.xml"] = "0123456789abcdef0123456789abcdef-3"  # multipart: no MD5 to check
    report = fetch_s3_prefix(url, "oa_comm/xml/all/", tmp_path)
    assert "PMC2.xml: MD5" in report.failed["PMC2.xml"]
    assert not (tmp_path / "PMC2.xml").exists()
    assert sorted(report.downloaded) == ["PMC1.xml", "PMC3.xml", "PMC4.xml", "PMC5.xml"]
