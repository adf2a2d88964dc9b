"""Ray Train's checkpoint storage: a local path or an `s3://bucket/prefix` URI (AWS S3 or an
S3-compatible store at `storage_endpoint`).

An S3 store is reached through pyarrow's S3FileSystem, which Ray Train uses on the driver, its
controller and every worker. With `storage_endpoint`, bioray builds it (endpoint_override) and the
endpoint travels with the pickled filesystem; the credentials never do (pyarrow does not pickle
them): every process reads them from its own environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
or a web identity token), so no key is ever in a workflow file, a stage's record or a log.
`check_storage` fails a run with one line, before training starts, when the store cannot be used.
"""

from __future__ import annotations

import os

S3 = "s3://"
# any one of these is a source of credentials pyarrow's (the AWS SDK's) default chain reads
CREDENTIAL_SOURCES = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_WEB_IDENTITY_TOKEN_FILE",),
                      ("AWS_CONTAINER_CREDENTIALS_FULL_URI",), ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",))


class StorageError(RuntimeError):
    """Checkpoint storage that cannot be used (no credentials, endpoint down, no such bucket)."""


def is_s3(storage: str) -> bool:
    return storage.startswith(S3)


def s3_filesystem(endpoint: str | None, *, probe: bool = False, region: str | None = None):
    """pyarrow's S3FileSystem at endpoint (None: AWS, or AWS_ENDPOINT_URL_S3 where it is set). A probe
    gives up within seconds (one try): a wrong endpoint is an error, not a long retry."""
    import pyarrow.fs as pafs

    options = {"endpoint_override": endpoint} if endpoint else {}
    options.update({"region": region} if region else {})
    if probe:
        options.update(connect_timeout=5, request_timeout=10,
                       retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    return pafs.S3FileSystem(**options)


def train_storage(storage: str, endpoint: str | None) -> tuple[str, object | None]:
    """RunConfig's (storage_path, storage_filesystem): an S3 URI at an endpoint becomes bucket/prefix on
    an S3FileSystem; a local path, or S3 on AWS, stays as it is (Ray Train picks its filesystem, which
    finds the bucket's region)."""
    if not is_s3(storage) or not endpoint:
        return storage, None
    return storage[len(S3):].rstrip("/"), s3_filesystem(endpoint)


def storage_uri(storage: str, fs_path: str) -> str:
    """A path on the storage's filesystem as a URI a reader elsewhere can open (`s3://bucket/...`)."""
    return S3 + fs_path.lstrip("/") if is_s3(storage) else fs_path


def check_storage(storage: str, endpoint: str | None) -> None:
    """For S3 storage: credentials in the environment, the endpoint answering, the bucket there (a
    HEAD of the bucket). The messages name keys and variables, never their values."""
    if not is_s3(storage):
        return
    bucket = storage[len(S3):].split("/", 1)[0]
    if not any(all(os.environ.get(name) for name in source) for source in CREDENTIAL_SOURCES):
        missing = [n for n in CREDENTIAL_SOURCES[0] if not os.environ.get(n)]
        raise StorageError(f"storage_path {storage}: no S3 credentials in the environment: set {' and '.join(missing)} "
                           "(or AWS_WEB_IDENTITY_TOKEN_FILE); they are never read from the workflow file")
    where = f"storage_endpoint {endpoint}" if endpoint else "S3 (AWS; storage_endpoint unset)"
    try:
        import pyarrow.fs as pafs

        on_aws = not (endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        region = pafs.resolve_s3_region(bucket) if on_aws else None  # AWS answers only in the bucket's region
        info = s3_filesystem(endpoint, probe=True, region=region).get_file_info(bucket)
    except OSError as error:
        reason = str(error).splitlines()[0]
        if "ACCESS_DENIED" in reason.upper() or "403" in reason:
            raise StorageError(f"storage_path {storage}: access to bucket {bucket!r} denied at {where}: check "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
        raise StorageError(f"storage_path {storage}: {where} cannot be used: {reason}") from None
    if info.type.name == "NotFound":
        raise StorageError(f"storage_path {storage}: bucket {bucket!r} does not exist at {where}")
