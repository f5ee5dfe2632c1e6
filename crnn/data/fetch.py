"""Fetches a file from ``https://``, ``http://``, ``s3://``, ``file://`` or a plain path to a verified copy.

Bytes go to ``.<name>.part`` beside the destination and are renamed onto it only when complete and matching
the expected digest, so no later run trusts a partial or corrupt download. Over HTTP a dropped connection is
resumed with a ``Range`` request (also across runs: the ``.part`` file stays until it is complete), with
retries and exponential back-off. ``s3://`` goes through boto3, which reads the endpoint, region and
credentials from the environment (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``...), so
MinIO or any S3-compatible store works; each request is retried in boto3's standard mode (5xx answers,
``SlowDown``, dropped connections; jittered back-off), and an S3 that stays unavailable ends in a
``ConnectionError`` naming the URL. URLs are logged and recorded without credentials or query (``redact``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crnn.files import file_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 16  # small enough that a dropped connection loses little of what arrived


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay_s: float = 1.0
    timeout_s: float = 60.0
    s3_attempts: int = 9  # per S3 request, in boto3's standard retry mode (its own back-off, capped at 20 s)

    def delay(self, attempt: int) -> float:
        return self.first_delay_s * 2 ** (attempt - 1)


DEFAULT_RETRY = RetryPolicy()


def redact(url: str) -> str:
    """``url`` without credentials or query (a presigned S3 URL's signature, a token): what logs and records
    may show."""
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc and not parts.query:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ChecksumError(ValueError):
    """The fetched bytes are not the ones the catalog promises."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha256" or "md5"
    hexdigest: str

    @classmethod
    def of(cls, sha256: str | None = None, md5: str | None = None) -> Checksum | None:
        if sha256:
            return cls("sha256", sha256.lower())
        return cls("md5", md5.lower()) if md5 else None

    def actual(self, path: Path) -> str:
        return file_digest(path, self.algorithm)


def fetch(url: str, dest: Path, sha256: str | None = None, md5: str | None = None,
          retry: RetryPolicy = DEFAULT_RETRY) -> Path:
    """Copies ``url`` to ``dest`` unless ``dest`` already holds verified bytes; returns ``dest``."""
    dest = Path(dest)
    expected = Checksum.of(sha256, md5)
    if dest.exists():
        if expected is None or expected.actual(dest) == expected.hexdigest:
            log.info("%s already present%s; not fetched again", dest, " and verified" if expected else "")
            return dest
        log.warning("%s does not match its %s; fetching it again", dest, expected.algorithm)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        _http_download(url, part, retry)
    else:
        part.unlink(missing_ok=True)  # only HTTP resumes; anything else starts over
        try:
            _s3_download(url, part, retry.s3_attempts) if scheme == "s3" else _copy_local(url, part)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    if expected is not None:
        actual = expected.actual(part)
        if actual != expected.hexdigest:
            part.unlink()
            raise ChecksumError(f"{redact(url)}: {expected.algorithm} mismatch: expected {expected.hexdigest}, "
                                f"got {actual}; the download was discarded")
    os.replace(part, dest)
    return dest


def _copy_local(url: str, dest: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{redact(url)}: unsupported scheme {parsed.scheme!r} (use https://, http://, s3://, "
                         "file:// or a path)")
    source = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme else Path(url)
    if not source.is_file():
        raise FileNotFoundError(f"{url}: no such file")
    shutil.copyfile(source, dest)


def _progress(total: int | None, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                mininterval=2.0, leave=False)


def _http_download(url: str, part: Path, retry: RetryPolicy) -> None:
    """Streams ``url`` into ``part``, resuming from its current size after a drop."""
    import requests
    import urllib3

    for attempt in range(1, retry.attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, stream=True, timeout=retry.timeout_s, headers=headers) as response:
                if response.status_code == 416 and have:  # nothing left to send: the part is whole
                    return
                response.raise_for_status()
                # A resume is only trusted when the server says it continues exactly where the part ends.
                resumed = response.status_code == 206 and _range_start(response) == have
                if response.status_code == 206 and not resumed:  # a piece from elsewhere: not the whole file
                    log.info("%s: the server sent another range than asked; fetching it whole", redact(url))
                    part.unlink(missing_ok=True)
                    continue
                if have and not resumed:
                    log.info("%s: the server did not continue at byte %d; starting over", redact(url), have)
                total = _expected_length(response, have if resumed else 0)
                with open(part, "ab" if resumed else "wb") as out, \
                        _progress(total, have if resumed else 0, part.name[1:-5]) as bar:
                    # The bytes as sent: a server that labels a .tar.gz "Content-Encoding: gzip" must not
                    # have it unpacked on the way.
                    for chunk in response.raw.stream(_CHUNK, decode_content=False):
                        out.write(chunk)
                        bar.update(len(chunk))
                if total is not None and part.stat().st_size < total:
                    raise requests.ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")
                return
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as err:  # reading the raw stream raises urllib3's own errors
            if attempt == retry.attempts:
                raise ConnectionError(f"{redact(url)}: failed after {attempt} attempts: {err}") from None
            delay = retry.delay(attempt)
            log.warning("%s: %s; retry %d/%d in %.1f s", redact(url), type(err).__name__, attempt,
                        retry.attempts - 1, delay)
            time.sleep(delay)
        except requests.HTTPError as err:
            status = err.response.status_code
            if status < 500 or attempt == retry.attempts:
                raise ConnectionError(f"{redact(url)}: HTTP {status}") from None
            time.sleep(retry.delay(attempt))


def _range_start(response) -> int | None:
    """The first byte a 206 answer carries (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _expected_length(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _s3_download(url: str, dest: Path, attempts: int) -> None:
    import boto3
    from botocore import exceptions as boto
    from botocore.config import Config
    from s3transfer.exceptions import RetriesExceededError

    parsed = urllib.parse.urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"{url}: expected s3://BUCKET/KEY")
    from crnn.credentials import export_mounted_secrets

    export_mounted_secrets()
    # boto3 reads AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_S3) itself; MLflow's own variable for its artifact
    # store is taken when those are unset, so a MinIO that serves MLflow serves the mirror too.
    endpoint = None if {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"} & set(os.environ) else \
        os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    client = boto3.client("s3", endpoint_url=endpoint,
                          config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}))
    try:
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        with _progress(size, 0, Path(key).name) as bar:
            client.download_file(bucket, key, str(dest), Callback=bar.update)
    except boto.ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status < 500:  # a missing key or a refusal: retrying would not help
            code = err.response.get("Error", {}).get("Code", "") or str(status)
            missing = status == 404 or code in ("NoSuchKey", "NoSuchBucket")
            raise (FileNotFoundError if missing else PermissionError if status == 403 else ValueError)(
                f"{redact(url)}: S3 answered {code} to {err.operation_name}") from None
        raise _unavailable(url, err, status) from None
    except (boto.ConnectionError, boto.HTTPClientError, RetriesExceededError) as err:  # after boto3's retries
        raise ConnectionError(f"{redact(url)}: {err}") from None


def _unavailable(url: str, err, status: int) -> ConnectionError:
    """What an S3 still failing after boto3's retries (5xx, ``SlowDown``) is reported as."""
    code = err.response.get("Error", {}).get("Code", "")
    tried = err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
    said = f"{status} {code}" if code and code != str(status) else str(status)
    return ConnectionError(f"{redact(url)}: S3 answered {said} to {err.operation_name} after {tried} attempt(s); "
                           "nothing was kept")
