"""Small file-system helpers shared by every step: atomic writes and digests."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(dest: Path, sync: bool = True) -> Iterator[Path]:
    """Yields a temporary sibling of ``dest`` (to fill as a file or a folder); puts it in place of ``dest``
    only if the block succeeds.

    A crash or an exception leaves ``dest`` as it was (absent or the previous good version) and no
    half-written file under its name. A file is flushed to disk before the rename, unless not ``sync`` (for
    files whose bytes are checked before they are trusted, and synced later with ``sync_file``). A folder
    replaces an old one by two renames (the old one moved aside first), so ``dest`` is never missing for
    longer than that.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_temporaries(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir() and dest.is_dir():
            os.replace(dest, aside)
        elif sync and tmp.is_file():
            sync_file(tmp)
        os.replace(tmp, dest)
    finally:
        for leftover in (tmp, aside):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists():
                leftover.unlink()


def clear_stale_temporaries(dest: Path) -> None:
    """Removes what a killed ``atomic_path`` of ``dest`` left (its process gone): the unfinished temporary,
    and the previous version it had moved aside, which is put back first if ``dest`` is missing (the kill fell
    between the two renames)."""
    for leftover in sorted(dest.parent.glob(f".{glob.escape(dest.name)}.*-*")):
        kind, _, pid = leftover.name.removeprefix(f".{dest.name}.").partition("-")
        # Our own pid's leftover is an earlier process's that had it (a container's pid 1 on every run).
        if kind not in ("tmp", "old") or not pid.isdigit() or (int(pid) != os.getpid() and _alive(int(pid))):
            continue
        if kind == "old" and not dest.exists():
            os.replace(leftover, dest)
        elif leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def start_writeback(path: Path) -> None:
    """Asks the kernel to start writing ``path`` to disk now, without waiting (``POSIX_FADV_DONTNEED``
    starts write-back of dirty pages and drops those already clean), so that a later ``sync_file`` finds
    little left to do. A write error is not consumed here: the later sync still reports it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    """Flushes the file to disk (one written by ``atomic_path`` without ``sync``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(dest: Path, data: Any) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


FileStamp = tuple[int, int]


def file_stamp(file: Path | int) -> FileStamp:
    """What tells a file's bytes changed without reading them: size and modification time, of a path or an
    open descriptor. Not the inode: some network and FUSE file systems number a file anew when the kernel
    forgets it, and a file replaced since was written later anyway."""
    status = os.stat(file)
    return status.st_size, status.st_mtime_ns
