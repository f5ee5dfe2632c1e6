"""Parallel conversion: byte-identical output whatever the worker count, and resume after a kill."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from crnn.data.convert import convert_split
from crnn.data.shards import LabelPolicy
from tests.test_readers import INDEX_CHANGES, change_index


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mjsynth_copies(root, count):
    """An MJSynth layout of ``count`` files (copies of a few rendered words, as conversion cost is per file)."""
    from tests.layouts import word_png

    words = ["Hello", "World", "crnn", "Text", "0042"]
    images = [word_png(w, i) for i, w in enumerate(words)]
    lines = []
    for i in range(count):
        rel = f"{i // 100}/{i % 7}/{i}_{words[i % 5]}_{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(images[i % 5] if i % 97 else b"broken")
        lines.append(f"./{rel} {i}\n")
    (root / "annotation_train.txt").write_text("".join(lines))
    return root / "annotation_train.txt"


def test_output_is_byte_identical_whatever_the_number_of_workers(tmp_path):
    index = _mjsynth_copies(tmp_path / "in", 400)
    one = convert_split("mjsynth", index, tmp_path / "one", shard_size=60, workers=1)
    two = convert_split("mjsynth", index, tmp_path / "two", shard_size=60, workers=2)
    assert one == two
    assert one["num_samples"] == 400 - 5 and one["skipped"] == {"undecodable_image": 5}
    assert len(one["shards"]) == 7
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")


def test_a_killed_conversion_resumes_and_ends_identical(tmp_path):
    index = _mjsynth_copies(tmp_path / "in", 3000)
    reference = convert_split("mjsynth", index, tmp_path / "reference", shard_size=100,
                              policy=LabelPolicy(for_training=True))  # what the CLI does for MJSynth

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "crnn.cli", "convert", "--format", "mjsynth", "--input", str(index),
               "--out", str(out), "--shard-size", "100", "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / ".parts").glob("shard-*.json"))) < 3:
        assert process.poll() is None, "the conversion ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list((out / ".parts").glob("shard-*.json")))
    assert not (out / "manifest.json").exists() and done_before < 30

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{done_before} shard(s) already written, {30 - done_before} to go" in result.stderr
    assert _tree(out) == _tree(tmp_path / "reference")
    assert reference["num_samples"] == 3000 - 31


def test_shard_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="shard_size must be at least 1"):
        convert_split("mjsynth", _mjsynth_copies(tmp_path, 3), tmp_path / "out", shard_size=0)


def test_resume_rewrites_a_shard_whose_bytes_do_not_match_its_figures(tmp_path):
    from crnn.config import ModelConfig
    from crnn.data.convert import PARTS, _inputs, convert_shards
    from crnn.data.readers import open_source

    index = _mjsynth_copies(tmp_path / "in", 50)
    reference = tmp_path / "reference"
    convert_split("mjsynth", index, reference, shard_size=20)
    out = tmp_path / "out"
    source, policy = open_source("mjsynth", index), LabelPolicy()
    convert_shards(source, out, ModelConfig(), policy, 20, _inputs(source, None))  # killed before finish
    assert len(list((out / PARTS).glob("shard-*.json"))) == 3
    (out / PARTS / "shard-00001.tfrecord").write_bytes(b"tampered")
    convert_split("mjsynth", index, out, shard_size=20)
    assert _tree(out) == _tree(reference)


@pytest.mark.parametrize("change", INDEX_CHANGES)
def test_an_index_written_to_after_it_was_opened_stops_the_workers_and_loses_nothing(tmp_path, change):
    """Workers read their lines by byte offsets found when the index was opened: if the index has changed
    since (a download rewriting it), they stop, naming it, rather than convert other lines under the plan."""
    from crnn.config import ModelConfig
    from crnn.data.convert import _inputs, convert_shards, worker_pool
    from crnn.data.readers import IndexChanged, open_source

    index = _mjsynth_copies(tmp_path / "in", 120)
    out = tmp_path / "out"
    convert_split("mjsynth", index, out, shard_size=20)
    before = _tree(out)
    source = open_source("mjsynth", index)
    change_index(index, index.read_bytes().splitlines(keepends=True), change)
    with (worker_pool(2) as pool,
          pytest.raises(IndexChanged, match=re.escape(f"{index}: changed since the conversion opened"))):
        convert_shards(source, out, ModelConfig(), LabelPolicy(), 20, _inputs(source, None), pool=pool)
    assert {name: data for name, data in _tree(out).items() if not name.startswith(".parts/")} == before


def test_slices_of_an_index_with_skipped_lines_merge_into_what_one_machine_writes(raw_dir, tmp_path):
    """Shards are cut by index lines, so lines that name no sample (blank, malformed, outside the root, not
    UTF-8) are counted by whichever shard or slice lists them, once, and every cut gives the same output."""
    import shutil

    from crnn.data.convert import convert_all, convert_slice, merge_slices, plan_slices, split_jobs
    from crnn.data.readers import find_index

    raw, key = tmp_path / "raw", "mjsynth/train"
    shutil.copytree(raw_dir, raw)
    index = find_index("mjsynth", split_jobs(raw, [key])[0]["index"])
    lines = index.read_bytes().splitlines(keepends=True)
    bad = [b"\n", b"no_word.jpg 1\n", b"../../etc/1_passwd_1.jpg 2\n", b"./1/1_caf\xe9_1.jpg 3\n"]
    for position, line in zip((3, 10, 11, 25), bad, strict=True):
        lines.insert(position, line)
    index.write_bytes(b"".join(lines))

    single = convert_all(raw, tmp_path / "single", shard_size=7, only=[key], workers=2)[key]
    slices = plan_slices(raw, [key], 7, 3)
    assert len(slices) == 3
    for number, part in enumerate(slices):
        convert_slice(raw, tmp_path / f"slice-{number}", part["ranges"], 7)
    merged = merge_slices(raw, [tmp_path / f"slice-{n}" for n in range(3)], tmp_path / "merged", [key], 7)[key]

    assert merged == single
    assert _tree(tmp_path / "merged") == _tree(tmp_path / "single")
    assert len(single["shards"]) == -(-len(lines) // 7)
    assert {"malformed_line": 1, "path_outside_root": 1, "label_not_utf8": 1}.items() <= single["skipped"].items()
    assert single["num_listed"] == single["num_samples"] + sum(single["skipped"].values()) == len(lines) - 1


def test_the_data_digest_ignores_the_shard_layout_and_the_mirror_but_not_the_samples(tmp_path):
    """What the gate compares: the same samples converted with another shard size or fetched from another
    mirror are the same data; other inputs or another label policy are not."""
    from crnn.data.shards import data_sha256, manifest_sha256

    index = _mjsynth_copies(tmp_path / "in", 120)
    inputs = {"files": {"words.tar": {"url": "https://example.org/words.tar", "sha256": "a" * 64}}}
    mirrored = {"files": {"words.tar": {"url": "http://mirror.local/words.tar", "sha256": "a" * 64}}}
    other = {"files": {"words.tar": {"url": "https://example.org/words.tar", "sha256": "b" * 64}}}
    runs = {
        "base": convert_split("mjsynth", index, tmp_path / "base", shard_size=50, inputs=inputs),
        "resharded": convert_split("mjsynth", index, tmp_path / "resharded", shard_size=1000, inputs=inputs),
        "mirrored": convert_split("mjsynth", index, tmp_path / "mirrored", shard_size=50, inputs=mirrored),
        "other_input": convert_split("mjsynth", index, tmp_path / "other_input", shard_size=50, inputs=other),
        "filtered": convert_split("mjsynth", index, tmp_path / "filtered", shard_size=50, inputs=inputs,
                                  policy=LabelPolicy(filter="alnum_min3")),
    }
    digests = {name: data_sha256(manifest) for name, manifest in runs.items()}
    assert manifest_sha256(tmp_path / "base") != manifest_sha256(tmp_path / "resharded")
    assert digests["base"] == digests["resharded"] == digests["mirrored"]
    assert len({digests["base"], digests["other_input"], digests["filtered"]}) == 3
