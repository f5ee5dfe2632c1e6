"""Atomic writes: what a killed writer left is cleared by the next one, and nothing good is lost."""

import os
import subprocess
import sys

from crnn.files import atomic_path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # gone now (a reused pid would only make the cleanup more careful)


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    dest, dead = tmp_path / "dataset", _dead_pid()
    half = tmp_path / f".dataset.tmp-{dead}"
    (half / "sub").mkdir(parents=True)
    (half / "sub" / "big.bin").write_bytes(b"\0" * 1000)
    live = tmp_path / f".dataset.tmp-{os.getppid()}"  # a writer still running: left alone
    live.write_text("in progress")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "done").write_text("ok")
    assert not half.exists() and live.exists()
    assert (dest / "done").read_text() == "ok"


def test_a_writer_killed_between_its_renames_gets_the_previous_version_back(tmp_path):
    dest, dead = tmp_path / "manifest.json", _dead_pid()
    (tmp_path / f".manifest.json.old-{dead}").write_text("previous good")  # dest moved aside, then the kill
    (tmp_path / f".manifest.json.tmp-{dead}").write_text("new, never put in place")
    try:
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("this writer fails too")
    except RuntimeError:
        pass
    assert dest.read_text() == "previous good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_leftover_under_this_process_id_is_an_earlier_process_s(tmp_path):
    """In a container every run may be pid 1: a temporary left by a killed run under the same pid must not
    block the next write for good."""
    dest = tmp_path / "dataset"
    half = tmp_path / f".dataset.tmp-{os.getpid()}"
    half.mkdir()
    (half / "partial.bin").write_bytes(b"\0" * 100)
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "done").write_text("ok")
    assert sorted(p.name for p in dest.iterdir()) == ["done"] and not half.exists()
