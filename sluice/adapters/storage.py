"""Zones as URIs: a local folder or ``s3://bucket/prefix``, behind one small interface.

boto3 honours ``AWS_ENDPOINT_URL`` (moto's server in tests, LocalStack, ...). Throttling, 5xx and
connection resets are retried inside the client with adaptive back-off; the Prefect task retries on top.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

from sluice.errors import (
    ConfigurationError,
    DestinationUnwritable,
    FileChanged,
    SourceNotFound,
    SourceUnreadable,
)

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> str:
    """A local file's path: ``uri`` itself, or the path a ``file://`` URI names (``file:///data/a%20b.csv`` is
    ``/data/a b.csv``: it was looked for as ``/data/a%20b.csv``, "file not found", and the unencoded form was
    recorded with its scheme, another source than the same file named by its path)."""
    if not uri.startswith("file://"):
        return uri
    host, _, path = uri.removeprefix("file://").partition("/")
    if host not in ("", "localhost"):
        return uri  # another machine's file: not readable here, and "not found" says so
    return unquote("/" + path)


def absolute(uri: str) -> str:
    """``uri`` as a run records it: an S3 URI as given, a local path (or ``file://`` URI) made an absolute path
    (``os.path.abspath``, ``..`` folded), so that one file is one source whatever folder it was named from. Links are
    not resolved: the path stays the one the file landed under, inside the landing zone."""
    if is_s3(uri):
        return uri
    path = local_path(uri)
    return path if path.startswith("file://") else os.path.abspath(path)


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
    #: A landed local file's (device, inode, size, mtime) when it was hashed; None for a copy of our own (S3)
    stamp: tuple[int, int, int, int] | None = None


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _changed(uri: str, size: int, now: int | None) -> FileChanged:
    sizes = f"{size:,} bytes when fingerprinted, " + (f"{now:,} now" if now is not None else "gone now")
    return FileChanged(
        f"{uri}: the file changed while it was read ({sizes}): is it still being written? Nothing was loaded; "
        "ingest it again once it is complete"
    )


def check_unchanged(fetched: FetchedFile) -> None:
    """``FileChanged`` unless the landed file is still the one ``fetch`` fingerprinted (same inode, size and
    mtime). Checked once the load has read it all, before it commits: the file is hashed, then read again by the
    load, and a file truncated or appended to in between loaded other rows than its SHA-256 recorded (a later
    copy of the whole file was then skipped as already loaded)."""
    if fetched.stamp is None:
        return
    try:
        now: tuple[int, int, int, int] | None = _stamp(fetched.path.stat())
    except OSError:
        now = None
    if now != fetched.stamp:
        raise _changed(fetched.uri, fetched.size, now[2] if now else None)


def _is_missing(exc: Exception, versioned: bool = False) -> bool:
    """True for "no such object" (a missing key, a missing version of it, a missing bucket)."""
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"} or status == 404:
        return True
    # A version id S3 cannot parse for this key ("Invalid version id specified"): that version is not here either.
    return versioned and code == "InvalidArgument"


def _is_denied(exc: Exception) -> bool:
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    return code in {"AccessDenied", "403", "Forbidden", "KMS.AccessDeniedException", "AllAccessDisabled"}


def access_denied(exc: BaseException) -> bool:
    """Whether AWS refused ``exc``'s call to these credentials, for a JSON-protocol service (DynamoDB, Secrets
    Manager; S3's codes are ``_is_denied``'s). moto answers a denied one with a 403 and an XML body botocore
    cannot parse (code "403")."""
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    return status == 403 or code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException")


def key_forms(uri: str) -> list[str]:
    """``uri`` as given, then its key URL-decoded (form- and RFC 3986-style), without repeats.

    S3's event notifications carry the key URL-encoded (``red flower.jpg`` arrives as ``red+flower.jpg``, ``a+b``
    as ``a%2Bb``); so do EventBridge's S3 events as AWS's own Lambda Powertools reads them. Keys typed by hand
    (CLI, UI, backfill) are raw. A local path has one form.
    """
    if not is_s3(uri):
        return [uri]
    bucket, key = split_s3(uri)
    return [f"s3://{bucket}/{k}" for k in dict.fromkeys([key, unquote_plus(key), unquote(key)])]


def locate(uri: str, version_id: str | None = None) -> str:
    """The form of ``uri`` (as given or URL-decoded, ``key_forms``) under which the object, and ``version_id``,
    exists: what the run records and reports. ``uri`` itself when it has one form, when no form exists, or when
    S3 cannot be asked now (the fetch then retries and reports it)."""
    forms = key_forms(uri)
    if len(forms) == 1:
        return uri
    client = s3_client()
    versioned = {"VersionId": version_id} if version_id else {}
    for candidate in forms:
        bucket, key = split_s3(candidate)
        try:
            client.head_object(Bucket=bucket, Key=key, **versioned)
        except Exception as exc:
            if _is_missing(exc, versioned=bool(version_id)) or _is_denied(exc):
                continue
            logger.debug("%s: not located (%s); the fetch will tell", uri, exc)
            return uri
        return candidate
    return uri


#: The longest file name a zone's destination is given, in bytes: file systems take 255, and a local write adds
#: ``.<pid>-<token>.part`` (``put_file``) to it before its rename.
NAME_BYTES = 200


def fitted(name: str, limit: int = NAME_BYTES) -> str:
    """``name`` when it is at most ``limit`` bytes; else its start, ``~`` and 12 hex digits of its SHA-256 (two
    long names never meet), and its extension (``.csv``, ``.csv.gz``) when it has a short one, in ``limit`` bytes."""
    if len(name.encode()) <= limit:
        return name
    suffix = "".join(Path(name).suffixes[-2:])
    suffix = suffix if len(suffix.encode()) <= 20 else ""
    head = name.encode()[: limit - 13 - len(suffix.encode())].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(name.encode()).hexdigest()[:12]}{suffix}"


def _local_name(key: str) -> str:
    """A file name for a fetched object: its base name when the file system takes it, else ``fitted``'s short
    stand-in that keeps the suffix (S3 keys run to 1,024 bytes; a file name to 255)."""
    name = basename(key)
    return "object" if name in {"", ".", ".."} else fitted(name)


def fetch(uri: str, work_dir: Path, version_id: str | None = None) -> FetchedFile:
    """Make ``uri`` readable as a local file and fingerprint it (the source is only ever read).

    A local file is hashed in place; an S3 object is streamed into ``work_dir``. S3 keys that arrive
    URL-encoded (``red+flower.csv``) are tried decoded when the raw key does not exist. ``version_id`` (from
    the S3 event) reads that version of the object, not whatever was written to the key since.
    """
    if not is_s3(uri):
        path = Path(local_path(uri))
        if not path.is_file():
            if path.exists():  # a pipe, say: "file not found" sent the user looking for a file that is there
                raise SourceUnreadable(f"{uri}: not a regular file (a pipe, socket or device)")
            raise SourceNotFound(f"{uri}: file not found")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            stamp = _stamp(os.fstat(handle.fileno()))
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
            fetched = FetchedFile(uri=uri, path=path, sha256=digest.hexdigest(), size=stamp[2], stamp=stamp)
            if _stamp(os.fstat(handle.fileno())) != stamp:  # written to while it was hashed
                raise _changed(uri, stamp[2], os.fstat(handle.fileno()).st_size)
        check_unchanged(fetched)  # replaced (a new inode at its path) while it was hashed
        return fetched

    client = s3_client()
    versioned = {"VersionId": version_id} if version_id else {}
    body, resolved_key, version, denied, no_bucket = None, "", None, None, False
    for candidate in key_forms(uri):
        bucket, key = split_s3(candidate)
        try:
            response = client.get_object(Bucket=bucket, Key=key, **versioned)
        except Exception as exc:
            if _is_missing(exc, versioned=bool(version_id)):
                no_bucket = _code(exc) == "NoSuchBucket"
                continue
            if _is_denied(exc):  # maybe only this form: another may be the object, and readable
                denied = denied or exc
                continue
            if (unsigned := no_credentials(uri, exc, "read it")) is not None:
                raise unsigned from None
            raise
        body, resolved_key, version = response["Body"], key, response.get("VersionId")
        break
    if body is None and denied is not None:
        raise _unreadable(uri, denied)
    if body is None and no_bucket:  # as a backfill of the same location says it
        raise SourceNotFound(f"{uri}: no such bucket {split_s3(uri)[0]!r}")
    if body is None:
        raise SourceNotFound(f"{uri}: object not found" + (f" (version {version_id})" if version_id else ""))
    work_dir.mkdir(parents=True, exist_ok=True)
    local = work_dir / _local_name(resolved_key)
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


def _unreadable(uri: str, exc: Exception) -> SourceUnreadable:
    return SourceUnreadable(
        f"{uri}: access denied reading the object ({_code(exc)}). On ECS the task role (stack output TaskRoleArn) "
        "may read the stack's landing and data buckets only; an object encrypted with a customer-managed KMS key "
        "also needs kms:Decrypt on that key (the stack's LandingObjectsKeyArn, README 'Deploy to AWS')"
    )


def no_credentials(uri: str, exc: Exception, to: str) -> ConfigurationError | None:
    """One line when botocore found no AWS credentials, or only half of them (not retried: none will appear).
    Was "Unable to locate credentials" after the task's retries, with nothing naming the location or the fix."""
    from botocore import exceptions  # AWS modules only when S3 is used

    if isinstance(exc, exceptions.NoCredentialsError):
        return ConfigurationError(
            f"{uri}: no AWS credentials to {to} (AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; "
            "on ECS, the task role)"
        )
    if isinstance(exc, exceptions.PartialCredentialsError):
        return ConfigurationError(f"{uri}: incomplete AWS credentials to {to}: {exc}")
    return None


def _code(exc: Exception) -> str:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "") or type(exc).__name__


def superseded_by(uri: str, version_id: str) -> str | None:
    """The key's latest version when it is no longer ``version_id`` (the key was overwritten since), else None.

    The key is the form of ``uri`` (as given or URL-decoded) that holds ``version_id``. A key whose latest
    version is a delete marker, or that cannot be looked at, counts as not superseded: the version still loads.
    """
    client = s3_client()
    for candidate in key_forms(uri):
        bucket, key = split_s3(candidate)
        try:
            client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
        except Exception as exc:
            if _is_missing(exc, versioned=True) or _is_denied(exc):
                continue
            raise
        try:
            latest = client.head_object(Bucket=bucket, Key=key).get("VersionId")
        except Exception as exc:
            if _is_missing(exc) or _is_denied(exc):
                return None
            raise
        return latest if latest and latest not in {version_id, "null"} else None
    return None


def put_file(local: Path, uri: str) -> str:
    """Copy a local file to ``uri`` (folder or S3); returns ``uri``."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _writing(uri):
            s3_client().upload_file(str(local), bucket, key)
    else:
        with _partial(Path(uri)) as tmp:
            shutil.copyfile(local, tmp)
    return uri


def put_bytes(data: bytes, uri: str) -> str:
    """Write ``data`` to ``uri`` atomically (rename locally, single PUT on S3)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _writing(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        with _partial(Path(uri)) as tmp:
            tmp.write_bytes(data)
    return uri


#: Where the task role may write, for the errors of a write it was refused.
_ON_ECS_WRITES = (
    "On ECS the task role (stack output TaskRoleArn) may write the stack's data bucket only: keep SLUICE_STAGING_URI, "
    "SLUICE_QUARANTINE_URI and SLUICE_TOTESYS_*_URI under it (stack outputs StagingUri, QuarantineUri)"
)


def _looking_denied(uri: str, exc: Exception) -> DestinationUnwritable:
    """A destination whose object could not even be looked at (a HEAD before writing it: 403)."""
    bucket, key = split_s3(uri)
    return DestinationUnwritable(
        f"{uri}: access denied looking at it before writing it ({_code(exc)}): this principal needs s3:GetObject "
        f"and s3:PutObject on arn:aws:s3:::{bucket}/{key} and s3:ListBucket on arn:aws:s3:::{bucket}. "
        f"{_ON_ECS_WRITES}"
    )


@contextlib.contextmanager
def _writing(uri: str) -> Iterator[None]:
    """An S3 write that AWS refuses for good (access denied, no such bucket, no credentials) is one line naming the
    location and the grant, not retried. Was boto3's ``S3UploadFailedError: Failed to upload /tmp/... to ...: An
    error occurred (AccessDenied)`` (or a ``ClientError``), retried three times by the step."""
    try:
        yield
    except Exception as exc:
        said = _write_failed(uri, exc)
        if said is exc:
            raise
        raise said from None


def _write_failed(uri: str, exc: Exception) -> Exception:
    """Why ``uri`` could not be written, as one error the user can act on, or ``exc`` itself."""
    bucket, key = split_s3(uri)
    # upload_file wraps botocore's ClientError in boto3's S3UploadFailedError, raised while handling it
    for cause in (exc, exc.__context__):
        if not isinstance(cause, Exception):
            continue
        if (unsigned := no_credentials(uri, cause, "write it")) is not None:
            return unsigned
        if _is_denied(cause):
            return DestinationUnwritable(
                f"{uri}: access denied writing it ({_code(cause)}): this principal needs s3:PutObject on "
                f"arn:aws:s3:::{bucket}/{key} (and, for a bucket encrypted with a customer-managed KMS key, "
                f"kms:GenerateDataKey on that key). {_ON_ECS_WRITES}"
            )
        if _code(cause) == "NoSuchBucket":
            return DestinationUnwritable(
                f"{uri}: no such bucket {bucket!r}: check the setting that names this location"
            )
    return exc


@contextlib.contextmanager
def _partial(dest: Path) -> Iterator[Path]:
    """A temporary file beside ``dest``, renamed over it when the block succeeds and removed when it fails.

    Its name is this writer's own: two processes writing the same file at once (two demos landing their samples)
    shared ``<name>.part``, so one could rename the other's half-written file into place. A failed write (the
    disk full) left the ``.part`` file in the zone.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        yield tmp
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                raise SourceNotFound(f"{uri}: object not found") from None
            if _is_denied(exc):
                raise _unreadable(uri, exc) from None
            if (unsigned := no_credentials(uri, exc, "read it")) is not None:
                raise unsigned from None
            raise
    path = Path(uri)
    if not path.is_file():
        raise SourceNotFound(f"{uri}: file not found")
    return path.read_bytes()


def same_content(uri: str, local: Path, block: int = 1 << 20) -> bool:
    """True when the file at ``uri`` holds exactly the bytes of ``local``; False when it differs or is absent.

    Compared block by block (sizes first), so memory stays at one block whatever the files' size.
    """
    size = local.stat().st_size
    if is_s3(uri):
        head = _head(uri)
        if head is None or head["ContentLength"] != size:
            return False
        bucket, key = split_s3(uri)
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        with local.open("rb") as mine:
            for piece in body.iter_chunks(chunk_size=block):
                if mine.read(len(piece)) != piece:
                    body.close()
                    return False
            return mine.read(1) == b""
    path = Path(uri)
    if not path.is_file() or path.stat().st_size != size:
        return False
    with path.open("rb") as theirs, local.open("rb") as mine:
        while True:
            a, b = theirs.read(block), mine.read(block)
            if a != b:
                return False
            if not a:
                return True


def exists(uri: str) -> bool:
    if is_s3(uri):
        return _head(uri) is not None
    return Path(uri).exists()


def folder_key_bytes(uri: str, version_id: str | None = None) -> int:
    """How many bytes the object at an S3 key ending in ``/`` holds (0: the console's empty folder marker, or no
    object). Not knowing (S3 unreachable, denied) is 0: the event is then skipped as a marker, as before."""
    bucket, key = split_s3(uri)
    versioned = {"VersionId": version_id} if version_id else {}
    try:
        return int(s3_client().head_object(Bucket=bucket, Key=key, **versioned).get("ContentLength") or 0)
    except Exception as exc:
        logger.debug("%s: size not known (%s)", uri, exc)
        return 0


def folder_key_holds(size: int) -> str:
    """Why an object whose key ends in ``/`` but that holds bytes is not loaded: the same words in a backfill's
    listing and for its S3 event (the event used to skip it as a folder marker, without a word to anyone)."""
    return (
        f"an object of {size:,} bytes whose key ends in '/' (a folder's name): copy it to a key with a file name "
        "to load it"
    )


def _head(uri: str) -> dict[str, Any] | None:
    """The S3 object's metadata, or None when it is absent; denied is one readable error (botocore's own says only
    "An error occurred (403) when calling the HeadObject operation")."""
    bucket, key = split_s3(uri)
    try:
        return s3_client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if _is_missing(exc):
            return None
        if _is_denied(exc):
            raise _looking_denied(uri, exc) from None
        raise


@dataclass(frozen=True)
class Unlisted:
    """An entry under a prefix that is not a loadable file, and why: what a backfill reports instead of a run.

    ``folder``: a folder named like a file (``x.csv/``), reported only when nothing in it was listed (its files
    otherwise are, each on its own). ``always``: an entry that may hide files whatever its name (a folder that
    could not be read, a link to a folder).
    """

    uri: str
    reason: str
    folder: bool = False
    always: bool = False


@dataclass(frozen=True)
class Listing:
    """What is under a prefix: the files to ingest and the entries that are not loadable files."""

    files: list[str]
    unlisted: list[Unlisted]


def left_out(relative: str) -> bool:
    """A path under the listed prefix (``/``-separated, from the prefix's folder) that is not a landed file: a
    hidden file or anything in a hidden folder (``.name``: an editor's lock, ``.ipynb_checkpoints/``, a sync tool's
    ``.tmp/``), or a partial copy (``*.part``: what ``put_file`` and download tools write before their rename).
    The same rule for a folder and for S3, whose listing had kept them all (a folder's had kept hidden folders)."""
    parts = relative.split("/")
    return any(part.startswith(".") for part in parts) or parts[-1].endswith(".part")


def list_files(prefix: str) -> Listing:
    """Every file under ``prefix`` (recursively), sorted, and every entry that is not a loadable file, with why.

    Hidden and partial files are left out (``left_out``: the same rule for a folder and S3), and on S3 a zero-byte
    key ending in ``/`` (the console's "folder" marker); nothing else is skipped without a reason.
    """
    if is_s3(prefix):
        return _list_s3(prefix)
    root = Path(absolute(prefix))
    if root.is_file():
        if reason := unusable_name(str(root)):
            return Listing([], [Unlisted(printable(str(root)), reason, always=True)])
        return Listing([str(root)], [])
    if not root.is_dir():
        return Listing([], [])
    files: list[str] = []
    unlisted: list[Unlisted] = []

    def unreadable_folder(exc: OSError) -> None:
        where = exc.filename or str(root)
        unlisted.append(Unlisted(str(where), f"folder not read: {exc.strerror or exc}", always=True))

    for folder, dirs, names in os.walk(root, onerror=unreadable_folder):
        base = Path(folder)
        dirs[:] = [name for name in dirs if not left_out(name)]  # pruned: a hidden folder is not walked
        for name in sorted(dirs):
            path = base / name
            if path.is_symlink():  # os.walk does not follow it (a link loop would never end)
                unlisted.append(
                    Unlisted(
                        str(path), "a link to a folder, not followed: give the folder itself", always=True
                    )
                )
            else:
                unlisted.append(Unlisted(str(path), "a folder, not a file", folder=True))
        for name in names:
            if left_out(name):
                continue
            path = base / name
            reason = unusable_name(str(path)) or _not_loadable(path)
            if reason:
                unlisted.append(Unlisted(printable(str(path)), reason))
            else:
                files.append(str(path))
    listed = set(files)
    said = {u.uri for u in unlisted if u.always}  # a folder not read is said once, as that
    unlisted = [u for u in unlisted if not (u.folder and (u.uri in said or _holds_any(u.uri, listed)))]
    return Listing(sorted(files), sorted(unlisted, key=lambda u: u.uri))


def _holds_any(folder: str, files: set[str]) -> bool:
    inside = folder.rstrip(os.sep) + os.sep
    return any(f.startswith(inside) for f in files)


def unusable_name(uri: str) -> str | None:
    """Why a landed file's name cannot be ingested as it is, or None. Not UTF-8 (a name in another encoding): the
    ledger, the file registry and every message hold text, and a backfill stopped at the first such name with a
    traceback. A control character: a newline split a backfill's one line per file and the ledger's rows, and an
    escape sequence recoloured the terminal."""
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8 text; rename it"
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return "its name holds a control character (shown escaped); rename it"
    return None


def printable(uri: str) -> str:
    """``uri`` as text a terminal, a log and the ledger can hold: a byte that is not UTF-8 as ``\\xe9``, a control
    character as ``\\n`` or ``\\x1b`` (the same text otherwise)."""
    text = uri.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(repr(c)[1:-1] if ord(c) < 32 or ord(c) == 127 else c for c in text)


def _not_loadable(path: Path) -> str | None:
    """Why the entry at ``path`` (not a folder) cannot be ingested, or None when it is a readable file."""
    if path.is_symlink() and not path.exists():
        return f"a broken link (to {os.readlink(path)}): no file there"
    if not path.is_file():
        return "not a regular file (a pipe, socket or device)"
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def _listing_failed(prefix: str, bucket: str, exc: Exception) -> Exception:
    """Why ``prefix`` could not be listed, as one line the user can act on (was botocore's traceback), or ``exc``
    itself when it is none of these."""
    from botocore import exceptions  # AWS modules only when S3 is used

    if (unsigned := no_credentials(prefix, exc, "list it")) is not None:
        return unsigned
    if isinstance(exc, exceptions.ParamValidationError):
        return ConfigurationError(f"{prefix}: not an S3 location: {str(exc).strip().splitlines()[-1]}")
    if isinstance(exc, exceptions.EndpointConnectionError):
        return ConfigurationError(f"{prefix}: cannot reach S3: {exc}")
    if _code(exc) == "NoSuchBucket":
        return SourceNotFound(f"{prefix}: no such bucket {bucket!r}")
    if _is_denied(exc):
        return SourceUnreadable(
            f"{prefix}: access denied listing it ({_code(exc)}): this principal needs s3:ListBucket on "
            f"arn:aws:s3:::{bucket}"
        )
    return exc


def _listed(prefix: str, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The objects under ``key``, page by page; a listing that fails is ``_listing_failed``'s one line."""
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            yield from page.get("Contents", [])
    except Exception as exc:
        said = _listing_failed(prefix, bucket, exc)
        if said is exc:
            raise
        raise said from exc


def _list_s3(prefix: str) -> Listing:
    bucket, key = split_s3(prefix)
    files: list[str] = []
    unlisted: list[Unlisted] = []
    # a key's path from the prefix's folder: "landing/tm" lists "landing/tm.csv" and "landing/tm/x.csv"
    folder = key.rpartition("/")[0] + "/" if "/" in key else ""
    for item in _listed(prefix, bucket, key):
        if item["Key"] != key and left_out(item["Key"].removeprefix(folder).rstrip("/")):
            continue
        uri = f"s3://{bucket}/{item['Key']}"
        if reason := unusable_name(uri):
            unlisted.append(Unlisted(printable(uri), reason))
        elif not item["Key"].endswith("/"):
            files.append(uri)
        elif item.get("Size", 0):  # a real object, not the console's empty folder marker
            unlisted.append(Unlisted(uri, folder_key_holds(item["Size"]), always=True))
    return Listing(sorted(files), sorted(unlisted, key=lambda u: u.uri))
