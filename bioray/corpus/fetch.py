"""Fetch NLM files: only what is not here yet, resuming partial downloads, verifying MD5 checksums.

The PubMed baseline and update directories (https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/,
.../updatefiles/) are HTTP listings of `pubmedYYnNNNN.xml.gz` files, each with a `.md5` sibling
holding `MD5(name)= <hex>`. The PMC Open Access subset is served (since PMC retired its FTP bulk
packages in 2026) from the public S3 bucket `pmc-oa-opendata` over HTTPS: objects are listed with
S3's ListObjectsV2 API, page by page, and each download is checked against the object's ETag, which
is its MD5 for single-part uploads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urljoin

from lxml import etree

log = logging.getLogger(__name__)

PUBMED_BASELINE = "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/"
PUBMED_UPDATES = "https://ftp.ncbi.nlm.nih.gov/pubmed/updatefiles/"
PUBMED_FILE = re.compile(r'href="(pubmed\d+n\d+\.xml\.gz)"')
PMC_OA_BUCKET = "https://pmc-oa-opendata.s3.amazonaws.com/"
PMC_OA_PREFIX = "oa_comm/xml/all/"
S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file does not match its published checksum."""


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _get(url: str, timeout: float, headers: dict | None = None):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def list_pubmed_files(listing_url: str, timeout: float = 60) -> list[str]:
    """The `.xml.gz` file names of a PubMed directory listing, in publication order."""
    with _get(listing_url, timeout) as response:
        html = response.read().decode("utf-8", errors="replace")
    return sorted(set(PUBMED_FILE.findall(html)))


def published_md5(md5_url: str, timeout: float = 60) -> str:
    """Parse NLM's `MD5(pubmed26n0001.xml.gz)= 0123…` (or a bare `hex  name`) checksum file."""
    with _get(md5_url, timeout) as response:
        text = response.read().decode("ascii", errors="replace")
    match = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not match:
        raise ChecksumError(f"{md5_url}: no MD5 checksum in {text[:80]!r}")
    return match.group(1).lower()


def digest_of(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, expected_md5: str | None = None, timeout: float = 60,
             algorithm: str = "md5") -> bool:
    """Download url to destination through `<name>.part`, resuming a partial file with an HTTP Range.

    Returns True when an earlier partial download was resumed. The file appears under its final
    name only after its checksum (`expected_md5`, or a digest of another hashlib `algorithm`) matched
    (a rename, so readers never see half a file).
    """
    partial = destination.with_name(destination.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _get(url, timeout, headers)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:  # 416: the partial file is already complete
            raise
        response = None
    resumed = bool(offset) and (response is None or response.status == 206)
    if response is not None:
        with response, open(partial, "ab" if resumed else "wb") as out:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
    if expected_md5 is not None:
        actual = digest_of(partial, algorithm)
        if actual != expected_md5:
            partial.unlink()  # a corrupt download is not resumed from
            raise ChecksumError(f"{destination.name}: {algorithm.upper()} {actual} does not match the published "
                                f"{expected_md5}")
    os.replace(partial, destination)
    return resumed


def fetch_file(report: FetchReport, name: str, url: str, target: Path, checksum, timeout: float,
               algorithm: str = "md5") -> bool:
    """One file into `report`: downloaded (resumed or not), or failed with why, without raising. `checksum`:
    a function giving the expected digest (fetching it may fail too). True when the file arrived."""
    try:
        if download(url, target, checksum(), timeout, algorithm):
            report.resumed.append(name)
        report.downloaded.append(name)
        log.info("fetched %s", name)
        return True
    except (OSError, ChecksumError) as exc:  # one bad file does not stop the others
        report.failed[name] = f"{type(exc).__name__}: {exc}"
        log.error("could not fetch %s: %s", name, exc)
        return False


def fetch_pubmed(listing_url: str, destination: Path, limit: int | None = None, timeout: float = 60,
                 in_order: bool = False) -> FetchReport:
    """Bring destination up to date with a PubMed listing: new files only, each checked against its .md5.

    in_order: stop at the first file that fails, so no later file arrives before it (incremental
    ingest needs update files in publication order); the next run starts again from it.
    """
    destination.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    names = list_pubmed_files(listing_url, timeout)
    for name in names[:limit] if limit else names:
        target = destination / name
        if target.exists():
            report.already_present.append(name)
            continue
        md5 = urljoin(listing_url, name + ".md5")
        if not fetch_file(report, name, urljoin(listing_url, name), target,
                          lambda md5=md5: published_md5(md5, timeout), timeout) and in_order:
            log.error("fetch: the files after %s are left for the next run (publication order)", name)
            break
    return report


@dataclass
class S3Object:
    key: str
    size: int
    md5: str | None  # None for a multipart upload, whose ETag is not an MD5


def list_s3_objects(bucket_url: str, prefix: str, suffixes: tuple[str, ...] = (),
                    timeout: float = 60) -> list[S3Object]:
    """Every object under prefix in a public S3 bucket (ListObjectsV2 over HTTPS, following continuation tokens)."""
    objects, token = [], None
    while True:
        query = f"?list-type=2&prefix={quote(prefix)}" + (f"&continuation-token={quote(token)}" if token else "")
        with _get(urljoin(bucket_url, query), timeout) as response:
            root = etree.fromstring(response.read())
        for item in root.iter(f"{S3}Contents"):
            key = item.findtext(f"{S3}Key")
            etag = (item.findtext(f"{S3}ETag") or "").strip('"')
            if key and (not suffixes or key.endswith(suffixes)):
                md5 = etag.lower() if re.fullmatch(r"[0-9a-fA-F]{32}", etag) else None
                objects.append(S3Object(key, int(item.findtext(f"{S3}Size") or 0), md5))
        if root.findtext(f"{S3}IsTruncated") != "true":
            return objects
        token = root.findtext(f"{S3}NextContinuationToken")


def fetch_s3_prefix(bucket_url: str, prefix: str, destination: Path, suffixes: tuple[str, ...] = (".xml", ".nxml"),
                    limit: int | None = None, timeout: float = 60) -> FetchReport:
    """Bring destination up to date with the objects under prefix: new objects only, each checked against its ETag.

    A file already here with the listed size is taken as present; one with another size is fetched again.
    """
    destination.mkdir(parents=True, exist_ok=True)
    report = FetchReport()
    objects = list_s3_objects(bucket_url, prefix, suffixes, timeout)
    for item in objects[:limit] if limit else objects:
        name = item.key.rsplit("/", 1)[-1]
        if name in ("", ".", "..") or "\\" in name:  # a listing is untrusted input: never leave destination
            report.failed[item.key] = "unsafe object name: refused"
            log.error("refused S3 object %r: its name is not a plain file name", item.key)
            continue
        target = destination / name
        if target.exists() and target.stat().st_size == item.size:
            report.already_present.append(name)
            continue
        fetch_file(report, name, urljoin(bucket_url, quote(item.key)), target, lambda md5=item.md5: md5, timeout)
    return report
