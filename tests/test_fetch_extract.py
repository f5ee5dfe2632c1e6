import hashlib
import io
import os
import stat
import tarfile
import zipfile

import pytest

import crnn.data.extract as extract_module
from crnn.data.extract import UnsafeArchiveError, extract
from crnn.data.fetch import ChecksumError, fetch
from tests.layouts import HOSTILE_MEMBERS, TRICKY_TARS, hostile_archive, tar_bytes, tricky_tar


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_file_url_verifies_and_keeps_a_good_copy(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload")
    dest = fetch(source.as_uri(), tmp_path / "out" / "data.bin", sha256=_sha256(b"payload"))
    assert dest.read_bytes() == b"payload"
    source.unlink()  # already present and verified: not fetched again
    assert fetch(source.as_uri(), dest, sha256=_sha256(b"payload")) == dest


def test_fetch_over_http(http_root, tmp_path):
    root, base = http_root
    (root / "a.tar").write_bytes(b"x" * 5000)
    dest = fetch(f"{base}/a.tar", tmp_path / "a.tar", md5=hashlib.md5(b"x" * 5000).hexdigest())
    assert dest.read_bytes() == b"x" * 5000


def test_checksum_mismatch_names_both_digests_and_leaves_nothing(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"corrupt")
    dest = tmp_path / "out" / "data.bin"
    with pytest.raises(ChecksumError) as err:
        fetch(str(source), dest, sha256="0" * 64)
    assert "0" * 64 in str(err.value) and _sha256(b"corrupt") in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_missing_source_and_unknown_scheme(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        fetch((tmp_path / "nope").as_uri(), tmp_path / "x")
    with pytest.raises(ValueError, match="unsupported scheme 'gopher'"):
        fetch("gopher://example/x", tmp_path / "x")


def _tar(tmp_path, members: dict[str, bytes], name="a.tar.gz"):
    path = tmp_path / name
    path.write_bytes(tar_bytes(members, "w:gz"))
    return path


def test_extract_tar_and_zip(tmp_path):
    assert extract(_tar(tmp_path, {"d/a.txt": b"a"}), tmp_path / "t1") == {}
    assert (tmp_path / "t1" / "d" / "a.txt").read_bytes() == b"a"
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("d/b.txt", b"b")
    extract(zpath, tmp_path / "t2")
    assert (tmp_path / "t2" / "d" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "d/../../evil.txt"])
def test_extract_refuses_traversal_and_leaves_no_partial_tree(tmp_path, member):
    archive = _tar(tmp_path, {"good.txt": b"g", member: b"evil"})
    with pytest.raises(UnsafeArchiveError, match="outside the target"):
        extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]


def test_extract_refuses_links_out_and_devices(tmp_path):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UnsafeArchiveError):
        extract(path, tmp_path / "t")
    dev = tmp_path / "dev.tar"
    with tarfile.open(dev, "w") as tar:
        node = tarfile.TarInfo("null")
        node.type = tarfile.CHRTYPE
        tar.addfile(node)
    with pytest.raises(UnsafeArchiveError, match="device"):
        extract(dev, tmp_path / "t")



@pytest.fixture(params=["with tarfile's filter", "without it (Python < 3.11.4)"])
def tar_filter(request, monkeypatch):
    """Each extraction test below runs twice: as on this Python, and as on one without tarfile's filters, where
    our own checks stand alone."""
    if request.param.startswith("without"):
        monkeypatch.setattr(extract_module, "_TAR_FILTER", {})
        monkeypatch.setattr(extract_module, "_FILTER_ERRORS", ())
    return request.param


def test_members_leaving_the_target_are_refused_with_or_without_tarfiles_filter(tmp_path, tar_filter):
    for number, (suffix, kind, name) in enumerate(HOSTILE_MEMBERS):
        archive = hostile_archive(tmp_path / f"a{number}.{suffix}", kind, name)
        with pytest.raises(UnsafeArchiveError) as err:
            extract(archive, tmp_path / "target")
        assert str(archive) in str(err.value) and repr(name.split(" -> ")[0]) in str(err.value), str(err.value)
        assert not (tmp_path / "target").exists()
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("case", sorted(TRICKY_TARS))
def test_members_that_escape_through_links_or_are_not_files_are_refused(tmp_path, tar_filter, case):
    archive = tricky_tar(tmp_path / "tricky.tar", TRICKY_TARS[case])
    with pytest.raises(UnsafeArchiveError, match="outside the target|hard link to the symbolic link|special file"):
        extract(archive, tmp_path / "box" / "target")
    assert not list(tmp_path.rglob("pwned")) and not (tmp_path / "box" / "target").exists()


def test_links_inside_are_kept_and_modes_made_harmless(tmp_path, tar_filter):
    path = tmp_path / "inside.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind, link, mode in [("d", tarfile.DIRTYPE, "", 0o1777),
                                       ("d/run", tarfile.REGTYPE, "", 0o4777),
                                       ("d/locked", tarfile.REGTYPE, "", 0o000),
                                       ("d/noexec", tarfile.REGTYPE, "", 0o677),
                                       ("up", tarfile.SYMTYPE, "d/run", 0o777),
                                       ("d/same", tarfile.SYMTYPE, "../d/run", 0o777),
                                       ("hard", tarfile.LNKTYPE, "d/run", 0o4777)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.uid, info.gid = kind, link, mode, 4242, 4242
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    extract(path, tmp_path / "t")
    t = tmp_path / "t"
    assert (t / "up").read_bytes() == (t / "d" / "same").read_bytes() == (t / "hard").read_bytes() == b"x"
    assert (t / "up").is_symlink() and (t / "d" / "same").is_symlink()
    assert stat.S_IMODE((t / "d" / "run").stat().st_mode) == 0o755  # no setuid, nobody else writes
    assert stat.S_IMODE((t / "d" / "locked").stat().st_mode) == 0o600  # its owner can read it
    assert stat.S_IMODE((t / "d" / "noexec").stat().st_mode) == 0o644  # nobody runs what its owner may not
    folder = stat.S_IMODE((t / "d").stat().st_mode)
    assert not folder & 0o7022 and folder & 0o700 == 0o700  # no sticky bit, nobody else writes (whatever the umask)
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in t.rglob("*")} == {(os.getuid(), os.getgid())}

def test_extract_caps_total_size(tmp_path):
    archive = _tar(tmp_path, {"big.bin": b"\0" * 10_000})
    with pytest.raises(UnsafeArchiveError, match="10000 bytes, over the 1000-byte cap"):
        extract(archive, tmp_path / "target", max_bytes=1000)
    assert not (tmp_path / "target").exists()


def test_extract_replaces_an_old_tree_only_on_success(tmp_path):
    target = tmp_path / "target"
    extract(_tar(tmp_path, {"v1.txt": b"1"}), target)
    with pytest.raises(UnsafeArchiveError):
        extract(_tar(tmp_path, {"../x": b"x"}, "bad.tar.gz"), target)
    assert (target / "v1.txt").exists()
    extract(_tar(tmp_path, {"v2.txt": b"2"}, "v2.tar.gz"), target)
    assert sorted(p.name for p in target.iterdir()) == ["v2.txt"]


def test_corrupt_zip_member_is_skipped_and_counted(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("good.txt", b"good" * 100)
        zf.writestr("bad.txt", b"B" * 400)
        zf.writestr("also_good.txt", b"fine")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"B" * 400, b"B" * 399 + b"X"))  # same size, wrong CRC
    skipped = extract(path, tmp_path / "target")
    assert skipped == {"corrupt_member": 1}
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["also_good.txt", "good.txt"]


def test_truncated_tar_keeps_what_came_before(tmp_path):
    members = {f"m{i}.bin": bytes([i]) * 20_000 for i in range(8)}
    archive = _tar(tmp_path, members)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    skipped = extract(archive, tmp_path / "target")
    assert skipped == {"truncated_archive": 1}
    kept = sorted(p.name for p in (tmp_path / "target").iterdir())
    assert kept and kept == sorted(members)[: len(kept)] and len(kept) < 8
    assert all((tmp_path / "target" / name).read_bytes() == members[name] for name in kept)


@pytest.mark.parametrize("damage", ["cut at a member boundary", "cut inside a header", "a header byte flipped"])
def test_a_tar_cut_or_damaged_at_a_header_is_counted_not_taken_for_its_end(tmp_path, damage):
    # tarfile itself ends its iteration quietly at such a header, as at the end-of-archive block.
    members = {f"m{i}.bin": bytes([i]) * 1000 for i in range(6)}
    data = tar_bytes(members)
    boundary = 3 * (512 + 1024)  # each member: a header block and two data blocks
    damaged = {"cut at a member boundary": data[:boundary], "cut inside a header": data[:boundary + 100],
               "a header byte flipped": data[:boundary + 10] + b"\xff" + data[boundary + 11:]}[damage]
    (tmp_path / "a.tar").write_bytes(damaged)
    assert extract(tmp_path / "a.tar", tmp_path / "target") == {"truncated_archive": 1}
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["m0.bin", "m1.bin", "m2.bin"]
    (tmp_path / "b.tar").write_bytes(data)
    assert extract(tmp_path / "b.tar", tmp_path / "whole") == {}


def test_a_tar_whose_last_member_is_a_zip_is_extracted_as_a_tar(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("README.txt", "docs")
    (tmp_path / "a.tar").write_bytes(tar_bytes({"gt.txt": b"word_1.png, \"a\"\n", "docs.zip": inner.getvalue()}))
    assert zipfile.is_zipfile(tmp_path / "a.tar")  # why the kind is told by the first bytes
    assert extract(tmp_path / "a.tar", tmp_path / "target") == {}
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["docs.zip", "gt.txt"]


def test_a_cut_zip_is_counted_as_truncated(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(4):
            zf.writestr(f"m{i}.bin", bytes([i]) * 5000)
    path.write_bytes(path.read_bytes()[:10_000])
    assert extract(path, tmp_path / "target") == {"truncated_archive": 1}
    assert list((tmp_path / "target").iterdir()) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_corrupt_bzip2_or_lzma_member_is_skipped_and_counted(tmp_path, method):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", method) as zf:
        for i in range(3):
            zf.writestr(f"m{i}.txt", f"member {i} ".encode() * 2000)
    data = bytearray(path.read_bytes())
    second = data.find(b"PK\x03\x04", 4)
    data[second + 80] ^= 0xFF  # inside the second member's compressed data
    path.write_bytes(bytes(data))
    assert extract(path, tmp_path / "target") == {"corrupt_member": 1}
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["m0.txt", "m2.txt"]


def test_a_206_from_another_offset_is_not_kept_as_the_file(tmp_path):
    """A server that answers a resume with some other range: the file is fetched whole instead."""
    import http.server
    import threading

    payload = bytes(range(256)) * 40

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Range"):  # always the first 4096 bytes, whatever was asked
                self.send_response(206)
                self.send_header("Content-Range", f"bytes 0-4095/{len(payload)}")
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(payload[:4096])
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / ".data.bin.part").write_bytes(payload[:1000])  # a dropped earlier attempt
        dest = fetch(f"http://127.0.0.1:{server.server_address[1]}/data.bin", tmp_path / "data.bin")
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == payload
