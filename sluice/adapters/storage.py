"""Zones as URIs: a local folder or ``s3://bucket/prefix``, behind one small interface.

boto3 honours ``AWS_ENDPOINT_URL`` (moto's server in tests, LocalStack, ...). Throttling, 5xx and
connection resets are retried inside the client with adaptive back-off; the Prefect task retries on top.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from sluice.errors import SourceNotFound

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts onto a zone URI (S3 or local) with ``/``."""
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_s3(base):
        return "/".join([base.rstrip("/"), *clean])
    return str(Path(base).joinpath(*clean))


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


@lru_cache(maxsize=4)
def _client(endpoint_url: str | None = None) -> Any:
    # AWS modules only when an s3:// location is used
    import boto3
    from botocore.config import Config

    # AWS_MAX_ATTEMPTS / AWS_RETRY_MODE, the standard AWS variables, override the defaults.
    retries = {
        "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "8")),
        "mode": os.environ.get("AWS_RETRY_MODE", "adaptive"),
    }
    config = Config(retries=retries, connect_timeout=10, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def s3_client() -> Any:
    """A cached S3 client; boto3 itself picks up ``AWS_ENDPOINT_URL`` and region settings."""
    return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def reset_clients() -> None:
    """Forget cached clients (tests switch endpoints)."""
    _client.cache_clear()


@dataclass(frozen=True)
class FetchedFile:
    """A landed file made readable locally, with its content fingerprint."""

    uri: str
    path: Path
    sha256: str
    size: int
    version: str | None = None


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    # NoSuchVersion: the event's version of the object is gone (deleted, expired): no retry brings it back.
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"}


def fetch(uri: str, work_dir: Path, version_id: str | None = None) -> FetchedFile:
    """Make ``uri`` readable as a local file and fingerprint it (the source is only ever read).

    A local file is hashed in place; an S3 object is streamed into ``work_dir``. S3 keys that arrive
    URL-encoded (``red+flower.csv``) are tried decoded when the raw key does not exist. ``version_id`` (from
    the S3 event) reads that version of the object, not whatever was written to the key since.
    """
    if not is_s3(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise SourceNotFound(f"{uri}: file not found")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
        return FetchedFile(uri=uri, path=path, sha256=digest.hexdigest(), size=path.stat().st_size)

    bucket, key = split_s3(uri)
    client = s3_client()
    body, resolved_key, version = None, key, None
    for candidate in dict.fromkeys([key, unquote_plus(key)]):
        try:
            versioned = {"VersionId": version_id} if version_id else {}
            response = client.get_object(Bucket=bucket, Key=candidate, **versioned)
        except Exception as exc:
            if _is_missing(exc):
                continue
            raise
        body, resolved_key, version = response["Body"], candidate, response.get("VersionId")
        break
    if body is None:
        raise SourceNotFound(f"{uri}: object not found" + (f" (version {version_id})" if version_id else ""))
    work_dir.mkdir(parents=True, exist_ok=True)
    local = work_dir / (basename(resolved_key) or "object")
    digest = hashlib.sha256()
    size = 0
    with local.open("wb") as out:
        for block in body.iter_chunks(_HASH_BLOCK):
            digest.update(block)
            out.write(block)
            size += len(block)
    return FetchedFile(
        uri=f"s3://{bucket}/{resolved_key}", path=local, sha256=digest.hexdigest(), size=size, version=version
    )


def put_file(local: Path, uri: str) -> str:
    """Copy a local file to ``uri`` (folder or S3); returns ``uri``."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().upload_file(str(local), bucket, key)
    else:
        dest = Path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(local, tmp)
        tmp.replace(dest)
    return uri


def put_bytes(data: bytes, uri: str) -> str:
    """Write ``data`` to ``uri`` atomically (rename locally, single PUT on S3)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        dest = Path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return uri


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                raise SourceNotFound(f"{uri}: object not found") from None
            raise
    path = Path(uri)
    if not path.is_file():
        raise SourceNotFound(f"{uri}: file not found")
    return path.read_bytes()


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        return True
    return Path(uri).exists()


def list_files(prefix: str) -> list[str]:
    """Every file under ``prefix`` (recursively), sorted; hidden and partial files are left out."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        paginator = s3_client().get_paginator("list_objects_v2")
        uris = [
            f"s3://{bucket}/{item['Key']}"
            for page in paginator.paginate(Bucket=bucket, Prefix=key)
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        ]
        return sorted(uris)
    root = Path(prefix)
    if root.is_file():
        return [str(root)]
    return sorted(
        str(p)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part")
    )
