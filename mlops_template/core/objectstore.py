"""The shared object store (S3 protocol) of team mode: the one place that talks to it.

Team mode keeps three things in one bucket that every machine reaches: the routing document
every replica watches, the models it names (as BentoML model archives), and the inference logs
the replicas ship. Locations are ``s3://bucket/key`` URLs; the endpoint and credentials are the
standard AWS settings (``AWS_ENDPOINT_URL`` for an S3-compatible store such as MinIO,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), the same ones the
MLflow artifact store and the DVC remote use.

Calls time out quickly and retry little (:data:`CONNECT_TIMEOUT_S`, :data:`READ_TIMEOUT_S`,
:data:`MAX_ATTEMPTS`): the callers decide what an outage means (a replica keeps its models, a
log shipper keeps its spool, retrain and rollback stop before changing anything), and none of
them should hang while deciding.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

SCHEME = "s3://"
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 2
MISSING = ("404", "NoSuchKey", "NotFound")  # error codes of an object that is not there


PRECONDITION = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")  # a condition did not hold


class StoreUnavailable(RuntimeError):
    """The object store could not be reached or refused the call (not: an object is missing)."""


class PreconditionFailed(RuntimeError):
    """A conditional write found the object changed (``If-Match``) or present (``If-None-Match``)."""


def is_url(location: str | Path | None) -> bool:
    """Whether ``location`` names an object in the store rather than a local path."""
    return isinstance(location, str) and location.startswith(SCHEME)


@dataclass(frozen=True)
class ObjectUrl:
    """``s3://bucket/key``, split."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectUrl:
        """Split an ``s3://bucket/key`` URL; ValueError when it is not one."""
        if not is_url(url):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, key = url[len(SCHEME):].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        return cls(bucket, key)

    def child(self, *parts: str) -> ObjectUrl:
        """The URL of ``parts`` below this one, read as a folder."""
        return ObjectUrl(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/")))

    def sibling(self, *parts: str) -> ObjectUrl:
        """The URL of ``parts`` in this object's folder."""
        folder = self.key.rpartition("/")[0]
        return ObjectUrl(self.bucket, folder).child(*parts)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


@functools.cache
def _client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)


@contextlib.contextmanager
def _translated(operation: str, url: ObjectUrl) -> Iterator[None]:
    """A missing object as FileNotFoundError; every other failure of the store as StoreUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING:
            raise FileNotFoundError(str(url)) from None
        if code in PRECONDITION:
            raise PreconditionFailed(f"{operation} {url}: {code}") from None
        raise StoreUnavailable(f"{operation} {url}: {code or exc}") from None
    except BotoCoreError as exc:
        raise StoreUnavailable(f"{operation} {url}: {exc}") from None


def _call(operation: str, url: ObjectUrl, **kwargs: Any) -> Any:
    """Run one S3 operation on ``url``'s bucket, its errors translated."""
    with _translated(operation, url):
        return getattr(_client(), operation)(Bucket=url.bucket, **kwargs)


def etag(url: ObjectUrl) -> str:
    """The object's ETag, which changes whenever it is rewritten (FileNotFoundError if absent)."""
    return str(_call("head_object", url, Key=url.key)["ETag"])


def exists(url: ObjectUrl) -> bool:
    """Whether the object is there."""
    try:
        etag(url)
    except FileNotFoundError:
        return False
    return True


def get_bytes(url: ObjectUrl) -> bytes:
    """The object's content (FileNotFoundError if absent)."""
    return _call("get_object", url, Key=url.key)["Body"].read()


def get_versioned(url: ObjectUrl) -> tuple[bytes, str, datetime, datetime | None]:
    """The object's content, ETag and last-modified time, and the store's clock when it answered.

    The store's clock (the response's ``Date`` header; None when absent) lets every machine judge
    an object's age on one clock, whatever their own clocks say. FileNotFoundError if absent.
    """
    from email.utils import parsedate_to_datetime

    answer = _call("get_object", url, Key=url.key)
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    store_now = parsedate_to_datetime(date) if date else None
    return answer["Body"].read(), str(answer["ETag"]), answer["LastModified"], store_now


def put_bytes(url: ObjectUrl, data: bytes, if_match: str | None = None, if_none_match: bool = False) -> str:
    """Write the object in one PUT: readers see the old content or the new, never a part; its ETag.

    ``if_match``: only if the object still has that ETag; ``if_none_match``: only if there is no
    object yet. A condition that does not hold raises :class:`PreconditionFailed` (a missing object
    under ``if_match`` raises FileNotFoundError) and nothing is written.
    """
    conditions: dict[str, str] = {}
    if if_match is not None:
        conditions["IfMatch"] = if_match
    if if_none_match:
        conditions["IfNoneMatch"] = "*"
    return str(_call("put_object", url, Key=url.key, Body=data, **conditions).get("ETag", ""))


def upload_file(path: Path, url: ObjectUrl) -> None:
    """Upload a local file (multipart when large; the object appears only when complete)."""
    from boto3.s3.transfer import TransferConfig

    with _translated("upload", url):
        _client().upload_file(str(path), url.bucket, url.key, Config=TransferConfig(use_threads=False))


def download_file(url: ObjectUrl, path: Path) -> None:
    """Download an object to a local file (FileNotFoundError if absent)."""
    with _translated("download", url):
        _client().download_file(url.bucket, url.key, str(path))


def list_objects(prefix: ObjectUrl) -> list[tuple[str, datetime]]:
    """Every key under ``prefix`` (read as a folder) with its last-modified time, by key."""
    return [(entry.key, entry.last_modified) for entry in list_entries(prefix)]


@dataclass(frozen=True)
class Entry:
    """One object of a listing: its key, size in bytes, ETag and last-modified time."""

    key: str
    size: int
    etag: str
    last_modified: datetime


def list_entries(prefix: ObjectUrl) -> list[Entry]:
    """Every object under ``prefix`` (read as a folder, nested keys included), by key."""
    folder = prefix.key.rstrip("/") + "/" if prefix.key else ""
    found: list[Entry] = []
    token: dict[str, str] = {}
    while True:
        page = _call("list_objects_v2", prefix, Prefix=folder, **token)
        found.extend(Entry(item["Key"], int(item["Size"]), str(item["ETag"]), item["LastModified"])
                     for item in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return sorted(found, key=lambda entry: entry.key)
        token = {"ContinuationToken": page["NextContinuationToken"]}


class ObjectTooLarge(ValueError):
    """An object holds more bytes than the caller accepts (:func:`download_capped`)."""


def download_capped(url: ObjectUrl, out: BinaryIO, if_match: str, max_bytes: int) -> int:
    """Stream the object into ``out`` only if it still has the ETag ``if_match``; the bytes written.

    The object a caller listed is the one it gets: a rewritten object raises
    :class:`PreconditionFailed`, a missing one FileNotFoundError, one above ``max_bytes``
    :class:`ObjectTooLarge` as soon as the limit is passed (whatever its listed size said).
    """
    written = 0
    with _translated("get_object", url):
        body = _client().get_object(Bucket=url.bucket, Key=url.key, IfMatch=if_match)["Body"]
        try:
            while chunk := body.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise ObjectTooLarge(f"{url} holds more than {max_bytes} bytes")
                out.write(chunk)
        finally:
            body.close()
    return written


def delete(url: ObjectUrl, if_match: str | None = None) -> None:
    """Delete the object; with ``if_match`` only while it still has that ETag.

    A condition that does not hold raises :class:`PreconditionFailed` and nothing is deleted; a
    missing object raises FileNotFoundError when a condition is given; a credential that may not
    delete raises PermissionError (not StoreUnavailable: the store answered). (A store that ignores
    ``If-Match`` on DELETE deletes anyway: callers compare the ETag first, too.)
    """
    from botocore.exceptions import ClientError

    with _translated("delete_object", url):
        try:
            _client().delete_object(Bucket=url.bucket, Key=url.key,
                                    **({"IfMatch": if_match} if if_match is not None else {}))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) == "AccessDenied":
                raise PermissionError(f"delete_object {url}: AccessDenied") from None
            raise


def check_reachable(url: ObjectUrl) -> None:
    """StoreUnavailable unless the bucket answers (a missing object is fine)."""
    _call("head_bucket", url)
