"""Safe extraction of tar (any compression) and zip archives.

Refused: absolute paths, ``..`` components, links that leave the target, device files, and decompression bombs:
the members' sizes, added up in order, may exceed neither ``max_bytes`` nor ``max_ratio`` times the archive's
own size (below ``RATIO_ALLOWANCE``, which small archives of text may use, the ratio is not applied). Sizes are
those the headers declare, checked before a member is written; neither format writes more than it declares (a
tar member's data is exactly its size, zipfile stops a member at its size). The error names the archive and
the member. Extraction happens in a temporary folder that is renamed onto the target only when complete, so a
failure leaves no partial tree.

Corruption is not a refusal: a member that fails its CRC or does not decompress is skipped and counted
(``corrupt_member``), and a stream that ends early keeps what came before it (``truncated_archive``); the
samples those members held then show up as missing images when the split is read. A tar must end with its
end-of-archive block: one that stops at a cut or damaged header (which Python's ``tarfile`` takes for the end)
is counted as truncated too, as is a zip whose directory at the end is missing.

The kind is told by the first bytes (a zip's local header), not by ``zipfile.is_zipfile``, which looks for a
zip directory at the end and finds one in a tar whose last member is a zip.

Every tar member passes our own checks before it is written, on every Python this project admits: it is a file,
a folder or a link; where it is written and where it links to, resolved on disk through the links extracted
before it, stay inside the target; setuid/setgid/sticky and group/other write bits are cleared, its owner may
read and write it, and it is owned by whoever extracts it. These are the checks of ``tarfile``'s "data" filter,
which is applied too where the Python has it: it arrived in 3.11.4, while Debian bookworm's Python is 3.11.2.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import posixpath
import tarfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from crnn.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_RATIO = 100.0  # image datasets expand about 1 to 3 times; a zip bomb of zeros about 1000 times
RATIO_ALLOWANCE = 64 << 20


class UnsafeArchiveError(ValueError):
    """The archive tries to write outside its target, or is too large."""


# tarfile's extraction filters (Python 3.11.4 and later); without them our own checks stand alone.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if _TAR_FILTER else ()


# Damaged data, as opposed to a full disk or a permission problem (those stop the extraction). bz2 reports
# damage as an OSError without an errno (``_damaged``).
_CORRUPTION = (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError,
               OSError)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip's directory


def _damaged(err: BaseException) -> bool:
    """Whether ``err`` (one of ``_CORRUPTION``) says the data is damaged rather than the disk or the system."""
    return not isinstance(err, OSError) or err.errno is None


def extract(archive: Path, target: Path, max_bytes: int = DEFAULT_MAX_BYTES,
            max_ratio: float = DEFAULT_MAX_RATIO) -> Counter:
    """Extracts ``archive`` into ``target`` (replacing it); returns what was skipped, by reason."""
    archive, target = Path(archive), Path(target)
    skipped: Counter = Counter()
    limit = _Limit.of(archive, max_bytes, max_ratio)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        with open(archive, "rb") as head:
            is_zip = head.read(4) in _ZIP_MAGIC
        if is_zip:
            _extract_zip(archive, tmp, limit, skipped)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, limit, skipped)
        else:
            raise ValueError(f"{archive}: neither a tar nor a zip archive")
    return skipped


@dataclass(frozen=True)
class _Limit:
    """How many uncompressed bytes an archive may hold, and why that many."""

    archive: Path
    max_bytes: int
    why: str

    @classmethod
    def of(cls, archive: Path, max_bytes: int, max_ratio: float) -> _Limit:
        size = archive.stat().st_size
        by_ratio = max(int(max_ratio * size), RATIO_ALLOWANCE)
        if by_ratio < max_bytes:
            return cls(archive, by_ratio, f"{max_ratio:g} times the archive's {size} bytes (a decompression bomb?)")
        return cls(archive, max_bytes, f"the {max_bytes}-byte cap")

    def check(self, total: int, member: str) -> None:
        """``total``: the declared sizes up to and including ``member``, which is not written yet."""
        if total > self.max_bytes:
            raise UnsafeArchiveError(f"{self.archive}: with member {member!r} the members add up to {total} "
                                     f"bytes, over {self.why}; the target is left as it was")


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the target")


def _check_tar_member(archive: Path, member: tarfile.TarInfo, root: str) -> None:
    """Refuses a member that would write outside ``root`` (the target's real path), and makes the one that would
    not harmless: what tarfile's "data" filter does, checked as it checks (each path resolved on disk, through
    the links extracted before it), so that it holds where the filter is missing."""
    _check_name(archive, member.name)
    if member.isdev():
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device file")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a special file (type {member.type!r})")
    name = member.name.rstrip("/")  # tarfile writes "a/" at "a"
    _refuse_outside(archive, member, root, posixpath.join(root, name), "would be written")
    if member.issym():  # relative to the link's own folder
        _refuse_outside(archive, member, root, posixpath.join(root, posixpath.dirname(name), member.linkname),
                        f"links to {member.linkname!r},")
    elif member.islnk():  # relative to the archive's root
        linked = posixpath.join(root, member.linkname)
        _refuse_outside(archive, member, root, linked, f"links to {member.linkname!r},")
        if os.path.islink(linked):
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a hard link to the symbolic link "
                                     f"{member.linkname!r}")
    member.mode = _harmless_mode(member)
    # Owned by whoever extracts (tarfile, run as root, would give it the archive's owner).
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""


def _refuse_outside(archive: Path, member: tarfile.TarInfo, root: str, path: str, what: str) -> None:
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} {what} outside the target")


def _harmless_mode(member: tarfile.TarInfo) -> int:
    """No setuid, setgid or sticky bit and nobody else may write; the owner may read and write a file (and enter
    a folder), and nobody may run a file its owner may not."""
    mode = member.mode & 0o755
    if member.isdir():
        return mode | 0o700
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _extract_zip(archive: Path, target: Path, limit: _Limit, skipped: Counter) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:  # a zip's directory is at its end: a cut zip has none
        skipped["truncated_archive"] += 1
        log.warning("%s: a zip without its directory, cut short? (%s); nothing extracted", archive, err)
        return
    with zf:
        members, total = zf.infolist(), 0
        for info in members:  # all of them checked before anything is written
            _check_name(archive, info.filename)
            # A symlink stored in a zip carries S_IFLNK in the high bits of external_attr.
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
            total += info.file_size
            limit.check(total, info.filename)
        for info in members:
            try:
                zf.extract(info, target)
            except _CORRUPTION as err:
                if not _damaged(err):
                    raise
                # The CRC is checked once the member is written: take the bad copy away again.
                (target / info.filename).unlink(missing_ok=True)
                skipped["corrupt_member"] += 1
                log.warning("%s: skipped member %s: %s", archive, info.filename, err)


def _extract_tar(archive: Path, target: Path, limit: _Limit, skipped: Counter) -> None:
    total, root = 0, os.path.realpath(target)
    headers = _headers_read()
    # Stream mode, and the member list emptied as we go: MJSynth's tar holds 9 million members.
    with tarfile.open(archive, "r|*", tarinfo=headers) as tar:
        members = iter(tar)
        while True:
            try:
                member = next(members, None)
            except _CORRUPTION as err:
                if not _damaged(err):
                    raise
                skipped["truncated_archive"] += 1
                log.warning("%s: the archive ends early (%s); kept what came before", archive, err)
                return
            tar.members = []
            if member is None:
                if not isinstance(headers.stop, tarfile.EOFHeaderError):
                    skipped["truncated_archive"] += 1
                    log.warning("%s: no end-of-archive block after the last member (%s: cut short or damaged "
                                "there); kept what came before", archive, headers.stop or "no more data")
                return
            _check_tar_member(archive, member, root)
            total += member.size if member.isfile() else 0
            limit.check(total, member.name)
            try:
                tar.extract(member, target, **_TAR_FILTER)
            except _FILTER_ERRORS as err:
                raise UnsafeArchiveError(f"{archive}: {err}") from err
            except _CORRUPTION as err:
                if not _damaged(err):
                    raise
                (target / member.name).unlink(missing_ok=True)
                skipped["truncated_archive"] += 1
                log.warning("%s: member %s is cut short (%s); kept what came before", archive, member.name, err)
                return


def _headers_read() -> type[tarfile.TarInfo]:
    """A ``TarInfo`` class that keeps why the last header could not be read (``stop``): ``tarfile`` ends its
    iteration quietly at a cut or damaged header as at the end-of-archive block, and only the reason tells a
    whole archive from a cut one."""

    class Headers(tarfile.TarInfo):
        stop: Exception | None = None

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            try:
                return super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError as err:
                Headers.stop = err
                raise

    return Headers
