"""Data on the data root, references in artifacts: keyed locations, reuse, and a clear stop when a cached
reference names data that is gone."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from crnn import pipeline_data
from crnn.data import store
from crnn.data.synthetic import SyntheticSpec
from crnn.tracking import STEP_RECORD

SPEC = SyntheticSpec(seed=3, train_size=20, val_size=4, test_size=5)


def test_a_location_is_made_once_and_then_reused(tmp_path):
    location = store.data_location(tmp_path, "raw", {"datasets": ["x"]})
    made = []

    def make(out):
        made.append(out)
        (out / "data.txt").write_text("bytes")

    assert store.produce(location, {"datasets": ["x"]}, make) is True
    assert store.produce(location, {"datasets": ["x"]}, make) is False
    assert made == [location] and (location / "data.txt").read_text() == "bytes"
    assert json.loads((location / store.COMPLETE_FILE).read_text())["inputs"] == {"datasets": ["x"]}
    assert location != store.data_location(tmp_path, "raw", {"datasets": ["y"]})
    assert location == store.data_location(tmp_path, "raw", {"datasets": ["x"]})


def test_a_failed_make_leaves_no_complete_location_and_no_reference(tmp_path):
    location = store.data_location(tmp_path, "raw", {"n": 1})

    def fail(out):
        (out / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.produce(location, {"n": 1}, fail)
    assert not store.is_complete(location)
    with pytest.raises(ValueError, match="not complete"):
        store.write_ref(tmp_path / "ref", location)
    # Run again, the step goes on from what the failed attempt left.
    assert store.produce(location, {"n": 1}, lambda out: (out / "rest.txt").write_text("rest"))
    assert sorted(p.name for p in location.iterdir()) == [store.COMPLETE_FILE, "half.txt", "rest.txt"]


def test_a_reference_to_data_that_is_gone_names_it_and_the_way_out(tmp_path):
    location = store.data_location(tmp_path / "volume", "converted", {"n": 2})
    store.produce(location, {"n": 2}, lambda out: None)
    (tmp_path / "artifact").mkdir()
    store.write_ref(tmp_path / "artifact", location)
    assert store.resolve(tmp_path / "artifact") == location
    (location / store.COMPLETE_FILE).unlink()  # the volume cleaned since KFP cached the step
    with pytest.raises(FileNotFoundError, match="caching off") as error:
        store.resolve(tmp_path / "artifact")
    assert str(location) in str(error.value)
    with pytest.raises(ValueError, match="no data-ref.json"):
        store.resolve(tmp_path)


@pytest.mark.parametrize("root", ["", "relative/path"])
def test_the_data_root_must_be_an_absolute_path(root):
    with pytest.raises(ValueError, match="data_root must be an absolute path"):
        store.data_location(root, "raw", {})


def _produce_slowly(location: str, log: str) -> None:
    def make(out):
        with open(log, "a") as f:
            f.write(f"start {os.getpid()}\n")
        time.sleep(0.5)
        with open(log, "a") as f:
            f.write(f"end {os.getpid()}\n")

    store.produce(Path(location), {}, make)


def test_two_producers_of_one_key_take_turns(tmp_path):
    """Two runs converting the same data at once: one makes it, the other waits and reuses it."""
    location, log = tmp_path / "raw" / "key", tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_produce_slowly, args=(str(location), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    lines = log.read_text().split()
    assert lines[0::2] == ["start", "end"] and len(lines) == 4  # made once, not interleaved


def test_the_data_steps_reuse_what_the_same_inputs_made(tmp_path):
    root, refs = tmp_path / "volume", tmp_path / "refs"
    for name in ("raw1", "raw2", "data1", "data2"):
        (refs / name).mkdir(parents=True)
    pipeline_data.download(str(root), str(refs / "raw1"), ["synthetic"], SPEC)
    location = store.resolve(refs / "raw1")
    record = json.loads((location / STEP_RECORD).read_text())
    pipeline_data.download(str(root), str(refs / "raw2"), ["synthetic"], SPEC)  # a cache miss, same inputs
    assert store.resolve(refs / "raw2") == location
    assert json.loads((location / STEP_RECORD).read_text()) == record  # not run again
    counts = pipeline_data.convert(str(refs / "raw1"), str(root), str(refs / "data1"), ["IC13/test"], 4)
    assert counts == {"IC13/test": 5}
    other = pipeline_data.convert(str(refs / "raw1"), str(root), str(refs / "data2"), ["IC13/test"], 2)
    assert store.resolve(refs / "data2") != store.resolve(refs / "data1")  # another shard size, another key
    assert other == counts
    assert pipeline_data.step_records([str(refs / "raw1"), str(refs / "data1")]) == [
        location, store.resolve(refs / "data1")]


def test_a_catalog_download_is_keyed_by_its_digests_not_its_urls():
    """Nor by the mirror it came through: whatever serves the files, they are verified against these digests."""
    from crnn.data.catalog import catalog_entry

    inputs = [pipeline_data._identity(catalog_entry(name)) for name in ("IIIT5K", "SVT")]
    assert all("url" not in json.dumps(entry) for entry in inputs)


def test_reports_are_gathered_per_run_and_missing_ones_named(tmp_path):
    for name in ("IC13", "SVT"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({"benchmarks": {name: {"accuracy": 0.5}}}))
        pipeline_data.keep_report(str(tmp_path / "root"), "run-1", str(tmp_path / name))
    reports = pipeline_data.gather_reports(str(tmp_path / "root"), "run-1", ["IC13/test", "SVT/test"])
    assert [list(r["benchmarks"]) for r in reports] == [["IC13"], ["SVT"]]
    with pytest.raises(FileNotFoundError, match="IIIT5K.json"):
        pipeline_data.gather_reports(str(tmp_path / "root"), "run-1", ["IIIT5K/test"])
    with pytest.raises(FileNotFoundError):
        pipeline_data.gather_reports(str(tmp_path / "root"), "run-2", ["SVT/test"])  # another run's folder
