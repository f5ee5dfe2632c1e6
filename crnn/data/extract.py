"""Safe extraction of tar (any compression) and zip archives.

Refused: absolute paths, ``..`` components, links that leave the target, device files and an archive whose
members add up to more than ``max_bytes``. Extraction happens in a temporary folder that is renamed onto the
target only when complete, so a failure leaves no partial tree.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from crnn.data.files import atomic_path

DEFAULT_MAX_BYTES = 64 << 30


class UnsafeArchiveError(ValueError):
    """The archive tries to write outside its target, or is too large."""


def extract(archive: Path, target: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Extracts ``archive`` into ``target`` (replacing it) and returns ``target``."""
    archive, target = Path(archive), Path(target)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, max_bytes)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, max_bytes)
        else:
            raise ValueError(f"{archive}: neither a tar nor a zip archive")
    return target


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the target")


def _check_total(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise UnsafeArchiveError(f"{archive}: members add up to {total} bytes, over the {max_bytes}-byte cap")


def _extract_zip(archive: Path, target: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_name(archive, info.filename)
            # A symlink stored in a zip carries S_IFLNK in the high bits of external_attr.
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
        _check_total(archive, sum(info.file_size for info in members), max_bytes)
        zf.extractall(target)


def _extract_tar(archive: Path, target: Path, max_bytes: int) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_name(archive, member.name)
            if member.isdev():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device file")
        _check_total(archive, sum(m.size for m in members if m.isfile()), max_bytes)
        try:
            # The "data" filter refuses links that leave the target, among other things.
            tar.extractall(target, filter="data")
        except tarfile.FilterError as err:
            raise UnsafeArchiveError(f"{archive}: {err}") from err
