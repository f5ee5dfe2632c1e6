"""Fetches a file from a URL (``file://``, a plain path, ``http(s)://``) to a verified local copy.

The bytes go to a temporary name and are renamed only when complete and matching the expected digest, so a
later run never trusts a partial or corrupt download.
"""

from __future__ import annotations

import logging
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

from crnn.data.files import atomic_path, file_digest

log = logging.getLogger(__name__)

_HTTP_ATTEMPTS = 4


class ChecksumError(ValueError):
    """The fetched bytes are not the ones the catalog promises."""


def fetch(url: str, dest: Path, sha256: str | None = None, md5: str | None = None) -> Path:
    """Copies ``url`` to ``dest`` unless ``dest`` already holds the verified bytes."""
    dest = Path(dest)
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    if dest.exists() and expected and file_digest(dest, algorithm) == expected.lower():
        log.info("%s already present and verified", dest)
        return dest
    with atomic_path(dest) as tmp:
        _copy(url, tmp)
        if expected:
            actual = file_digest(tmp, algorithm)
            if actual != expected.lower():
                raise ChecksumError(
                    f"{url}: {algorithm} mismatch: expected {expected.lower()}, got {actual}; "
                    "the download was discarded")
    return dest


def _copy(url: str, dest: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        source = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme else Path(url)
        if not source.is_file():
            raise FileNotFoundError(f"{url}: no such file")
        shutil.copyfile(source, dest)
    elif parsed.scheme in ("http", "https"):
        _http_download(url, dest)
    else:
        raise ValueError(f"{url}: unsupported scheme {parsed.scheme!r} (use file://, http:// or https://)")


def _http_download(url: str, dest: Path) -> None:
    import requests

    for attempt in range(1, _HTTP_ATTEMPTS + 1):
        try:
            with requests.get(url, stream=True, timeout=60) as response:
                response.raise_for_status()
                with open(dest, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        out.write(chunk)
            return
        except (requests.ConnectionError, requests.Timeout) as err:
            if attempt == _HTTP_ATTEMPTS:
                raise ConnectionError(f"{url}: failed after {attempt} attempts: {err}") from err
            delay = 2 ** attempt
            log.warning("%s: %s; retrying in %ss", url, err, delay)
            time.sleep(delay)
