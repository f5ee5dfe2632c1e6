"""Process kills (issue 8): each step, run as the real CLI, is SIGKILLed midway and run again into the same folder.

"Midway" is read from the step's own progress (files appearing under its output), never from a sleep. The
whole process group is killed, as when a pod is evicted: convert's worker processes die with it. Each case
checks that the rerun completes, reuses what the step is designed to reuse, ends equal to an uninterrupted run
of the same command, and that no file under a final name was half-written, neither at the kill nor after.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.loopback_api import serve_handler
from tests.test_cli import CRNN, crnn

pytestmark = pytest.mark.reliability

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}
# Names a step writes before renaming onto the final one: atomic_path's (``.NAME.tmp-PID``, ``.NAME.old-PID``),
# fetch's resumable ``.NAME.part``, and TensorFlow's (``ckpt-N_temp/``, ``checkpoint.tmp<uuid hex>``).
TEMPORARY = re.compile(r"^\..+\.(tmp|old)-\d+$|^\..+\.part$|_temp$|\.tmp[0-9a-f]{32}$")


# -- running and killing a step ---------------------------------------------------------------------------


def _start(args: list, log: Path) -> subprocess.Popen:
    """The step in its own process group, so that a kill takes its worker processes too."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | QUIET
    with open(log, "w") as out:
        return subprocess.Popen([*CRNN, *map(str, args)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the step ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no sign of {what} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the step had already ended (rc {proc.returncode}) when killed"


def _rerun(args: list) -> subprocess.CompletedProcess:
    return crnn(*args, env=QUIET)


# -- what is in an output folder ---------------------------------------------------------------------------


def _temporary(root: Path) -> list[str]:
    """Temporary names under ``root`` (the outermost one of a temporary folder)."""
    found = set()
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        for depth, part in enumerate(parts):
            if TEMPORARY.search(part):
                found.add("/".join(parts[:depth + 1]))
                break
    return sorted(found)


def _final_files(root: Path) -> dict[str, str]:
    """Every file under a final name -> its sha256, each of a kind that can tell (JSON, TFRecord, zip, PNG)
    checked whole first; the others are compared with an uninterrupted run's."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(TEMPORARY.search(part) for part in rel.parts):
            continue
        _check_whole(path)
        files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _check_whole(path: Path) -> None:
    name = path.name
    try:
        if name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".tfrecord"):
            _tfrecord_records(path)
        elif name.endswith((".zip", ".keras")):
            with zipfile.ZipFile(path) as archive:
                assert archive.testzip() is None, "a member fails its CRC"
        elif name.endswith(".png"):
            import cv2
            import numpy as np

            assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED) is not None, "undecodable"
    except Exception as err:
        raise AssertionError(f"{path} is not whole under its final name: {type(err).__name__}: {err}") from None


def _masked_crc(data: bytes) -> bytes:
    import google_crc32c

    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _tfrecord_records(path: Path) -> int:
    """The number of records in a TFRecord file whose every frame and CRC checks out to its last byte."""
    data, position, count = path.read_bytes(), 0, 0
    while position < len(data):
        header = data[position:position + 8]
        assert len(header) == 8 and data[position + 8:position + 12] == _masked_crc(header), f"frame {count}"
        (length,) = struct.unpack("<Q", header)
        body = data[position + 12:position + 12 + length]
        assert len(body) == length and data[position + 12 + length:position + 16 + length] == _masked_crc(body), \
            f"record {count} is cut or corrupt"
        position, count = position + 16 + length, count + 1
    return count


def _inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


# -- download ----------------------------------------------------------------------------------------------

CHUNK, PAUSE = 1 << 16, 0.02  # a slow link: 64 KiB every 20 ms, about 3 MB/s


class _SlowMirror(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` in chunks over a slow link, honours ``Range: bytes=N-``, records each request."""

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        try:
            for offset in range(start, len(data), CHUNK):
                self.wfile.write(data[offset:offset + CHUNK])
                time.sleep(PAUSE)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_mirror():
    server = serve_handler(_SlowMirror)
    server.files, server.requests = {}, []
    yield server
    server.shutdown()
    server.server_close()


def _zip(folder: Path, padding_seed: int) -> bytes:
    """``folder``'s files as a reproducible zip, plus 1.5 MB of random bytes that make it take ~0.5 s to send."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.writestr(zipfile.ZipInfo(str(path.relative_to(folder)), (1980, 1, 1, 0, 0, 0)), path.read_bytes())
        archive.writestr(zipfile.ZipInfo("padding.bin", (1980, 1, 1, 0, 0, 0)),
                         np.random.default_rng(padding_seed).bytes(1_500_000), zipfile.ZIP_STORED)
    return buffer.getvalue()


def test_download_killed_mid_fetch_resumes_and_fetches_nothing_twice(slow_mirror, tmp_path, reliability):
    from tests import layouts

    # Catalog datasets without a published checksum, so that the mirror may serve any bytes; fetch still
    # renames a file onto its final name only once every byte the server announced has arrived.
    files = {"IC03": ("word.zip", layouts.ic03), "SVTP": ("svtp.zip", layouts.svtp),
             "CUTE80": ("CUTE80.zip", layouts.cute80)}
    for seed, (dataset, (name, build)) in enumerate(files.items()):
        build(tmp_path / "layouts" / dataset)
        slow_mirror.files[f"/mirror/{dataset}/{name}"] = _zip(tmp_path / "layouts" / dataset, seed)
    first, second, third = files
    out, reference = tmp_path / "raw", tmp_path / "reference"
    args = ["download", *files, "--mirror", f"{slow_mirror.base}/mirror"]

    _rerun([*args, "--out", reference])
    assert sorted(path for path, _ in slow_mirror.requests) == sorted(slow_mirror.files)
    slow_mirror.requests.clear()

    part = out / "archives" / second / f".{files[second][0]}.part"
    size = len(slow_mirror.files[f"/mirror/{second}/{files[second][0]}"])
    proc = _start([*args, "--out", out], tmp_path / "killed.log")
    _kill_when(proc, lambda: part.is_file() and part.stat().st_size >= size // 2, tmp_path / "killed.log",
               f"half of {second}'s archive")
    have = part.stat().st_size
    assert (out / first / ".crnn-complete.json").is_file()  # the first dataset fetched, extracted and marked
    assert 0 < have < size
    _final_files(out)  # nothing under a final name is partial
    temporary_at_kill = _temporary(out)
    assert temporary_at_kill == [str(part.relative_to(out))]
    slow_mirror.requests.clear()

    rerun = _rerun([*args, "--out", out])
    assert f"{first}: already downloaded, verified and extracted" in rerun.stderr
    asked = {dataset: [rng for path, rng in slow_mirror.requests if path == f"/mirror/{dataset}/{name}"]
             for dataset, (name, _) in files.items()}
    assert asked == {first: [], second: [f"bytes={have}-"], third: [None]}
    assert _temporary(out) == []
    tree = _final_files(out)
    assert tree == _final_files(reference)

    reliability(
        "process", f"`crnn download {' '.join(files)} --mirror http://...` SIGKILLed while {second}'s archive "
        f"was arriving ({have:,} of {size:,} bytes), {first} fetched and extracted; the same command run again",
        f"the rerun sent no request for {first} (found fetched, extracted and marked complete), resumed {second} with "
        f"one request `Range: {asked[second][0]}` and fetched {third} once; its {len(tree)} files have the "
        f"sha256 of an uninterrupted run's; at the kill nothing under a final name was partial (the one "
        f"temporary, {temporary_at_kill[0]}, was resumed into place), none left after")


# -- convert -----------------------------------------------------------------------------------------------

SHARD_SIZE = 4  # many small shards: the 800 training samples take some seconds to convert


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory) -> Path:
    from crnn.data.download import download_synthetic
    from crnn.data.synthetic import SyntheticSpec

    out = tmp_path_factory.mktemp("big-raw")
    download_synthetic(out, SyntheticSpec(seed=11, train_size=800, val_size=16, test_size=12))
    return out


def _convert_args(raw: Path) -> list:
    return ["convert", "--raw", raw, "--shard-size", SHARD_SIZE, "--workers", 2]


@pytest.fixture(scope="module")
def converted_reference(big_raw, tmp_path_factory) -> Path:
    """The same conversion, uninterrupted."""
    out = tmp_path_factory.mktemp("converted-reference")
    _rerun([*_convert_args(big_raw), "--out", out])
    return out


def test_convert_killed_mid_split_keeps_whole_shards_and_redoes_the_rest(big_raw, converted_reference, tmp_path,
                                                                          reliability):
    out = tmp_path / "converted"
    split = out / "mjsynth" / "train"
    expected = json.loads((converted_reference / "mjsynth" / "train" / "manifest.json").read_text())
    total = len(expected["shards"])
    proc = _start([*_convert_args(big_raw), "--out", out], tmp_path / "killed.log")
    _kill_when(proc, lambda: len(list((split / ".parts").glob("shard-*.json"))) >= total // 3,
               tmp_path / "killed.log", f"a third of the {total} shards")

    assert not (split / "manifest.json").exists()
    at_kill = _final_files(out)  # every shard under its final name holds whole records
    # Shards and their figures as the step left them (wherever in the split's folder it keeps them until done).
    shards_at_kill = {Path(rel).name: out / rel for rel in at_kill if rel.startswith("mjsynth/train/")
                      and rel.endswith(".tfrecord")}
    figures = {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in (split / ".parts").glob("shard-*.json")}
    whole = {name for name, f in figures.items()
             if name in shards_at_kill and at_kill[str(shards_at_kill[name].relative_to(out))] == f["sha256"]}
    stamps = {name: _inode(path) for name, path in shards_at_kill.items()}
    temporary_at_kill = _temporary(out)
    assert 0 < len(whole) < total

    result = _rerun([*_convert_args(big_raw), "--out", out])
    resumed = re.search(rf"{re.escape(str(split))}: (\d+) shard\(s\) already written, (\d+) to go", result.stderr)
    assert resumed, result.stderr[-3000:]
    kept = {name for name, stamp in stamps.items() if _inode(split / name) == stamp}  # kept, or moved as it was
    assert kept == whole
    assert (int(resumed[1]), int(resumed[2])) == (len(whole), total - len(whole))
    assert _temporary(out) == []
    tree = _final_files(out)
    assert tree == _final_files(converted_reference)  # byte-identical shards and manifests

    orphans = set(shards_at_kill) - whole
    reliability(
        "process", f"`crnn convert --raw ... --shard-size {SHARD_SIZE} --workers 2` SIGKILLed (with its workers) "
        f"after {len(whole)} of mjsynth/train's {total} shards; the same command run again",
        f"the rerun kept the {len(whole)} shards whose recorded sha256 matched (same inode and mtime), wrote the "
        f"other {total - len(whole)}" + (f" (among them {len(orphans)} whole shard(s) whose figures were not "
                                         "written yet)" if orphans else "")
        + f" and the remaining splits; its {len(tree)} files (shards and manifests) are byte-identical to an "
        f"uninterrupted run's; at the kill every shard under its final name held whole records and no manifest "
        f"existed; the {len(temporary_at_kill)} temporary name(s) the kill left "
        f"({', '.join(temporary_at_kill) or 'none'}) were removed by the rerun")


# -- train -------------------------------------------------------------------------------------------------

STEPS, EVERY = 120, 20


def _train_args(data: Path) -> list:
    return ["train", "--train", data / "mjsynth" / "train", "--preset", "tiny", "--steps", STEPS,
            "--checkpoint-every", EVERY, "--log-every", 1]


def _learning_rates(log: str) -> dict[int, str]:
    return {int(step): lr for step, lr in re.findall(rf"step (\d+)/{STEPS} loss \S+ lr (\S+)", log)}


@pytest.fixture(scope="module")
def trained_reference(converted_dir, tmp_path_factory) -> tuple[Path, str]:
    """The same training, uninterrupted: (its folder, its log)."""
    out = tmp_path_factory.mktemp("trained-reference")
    return out, _rerun([*_train_args(converted_dir), "--out", out]).stderr


def _checkpoints(out: Path) -> list[int]:
    """The checkpoint numbers TensorFlow's index lists, each checked: every tensor read back (but the input
    pipeline's state, a variant that only a restore into a pipeline reads, as the resume does)."""
    import tensorflow as tf

    state = (out / "checkpoints" / "checkpoint").read_text()
    numbers = [int(n) for n in re.findall(r'all_model_checkpoint_paths: "ckpt-(\d+)"', state)]
    for number in numbers:
        reader = tf.train.load_checkpoint(str(out / "checkpoints" / f"ckpt-{number}"))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype != tf.variant:
                reader.get_tensor(name)
    return numbers


def test_train_killed_after_a_checkpoint_resumes_with_the_same_schedule(converted_dir, trained_reference, tmp_path,
                                                                       reliability):
    """What a resume guarantees (crnn/train/checkpoints.py): the step counter, the learning-rate schedule and the
    recipe continue, from the input pipeline's saved position. Not equal weights: training interleaves its
    shards with ``deterministic=False``, so two uninterrupted runs differ as well."""
    reference, reference_log = trained_reference
    out = tmp_path / "trained"
    log = tmp_path / "killed.log"
    proc = _start([*_train_args(converted_dir), "--out", out], log)
    # Between two checkpoints: past step 2.5 intervals, checkpoint 2 written.
    _kill_when(proc, lambda: (out / "checkpoints" / f"ckpt-{2 * EVERY}.index").is_file()
               and max(_learning_rates(log.read_text()), default=0) >= 5 * EVERY // 2, log,
               f"step {5 * EVERY // 2}")
    first = log.read_text()
    done_before_kill = max(_learning_rates(first))
    saved = _checkpoints(out)  # every checkpoint the index names reads back whole
    assert saved and done_before_kill < STEPS and done_before_kill - saved[-1] <= EVERY
    at_kill = _final_files(out)
    temporary_at_kill = _temporary(out)

    result = _rerun([*_train_args(converted_dir), "--out", out])
    assert f"resumed from {out / 'checkpoints' / f'ckpt-{saved[-1]}'} at step {saved[-1]}" in result.stderr
    assert "cannot be read" not in result.stderr
    assert f"trained {STEPS} steps" in result.stdout
    redone = _learning_rates(result.stderr)
    assert sorted(redone) == list(range(saved[-1] + 1, STEPS + 1))  # the step counter continued
    rates = _learning_rates(reference_log)
    assert {step: rates[step] for step in redone} == redone  # the same schedule, step by step
    assert {step: rates[step] for step in _learning_rates(first)} == _learning_rates(first)
    kept = _checkpoints(out)
    assert kept == _checkpoints(reference)
    for same in ("recipe.json", "export/recipe.json"):
        assert (out / same).read_bytes() == (reference / same).read_bytes()
    assert _temporary(out) == []
    tree = _final_files(out)

    reliability(
        "process", f"`crnn train --preset tiny --steps {STEPS} --checkpoint-every {EVERY}` SIGKILLed at step "
        f"{done_before_kill} (latest checkpoint {saved[-1]}); the same command run again",
        f"the rerun restored ckpt-{saved[-1]} and ran steps {saved[-1] + 1}-{STEPS} ({done_before_kill - saved[-1]} "
        f"redone); as in an uninterrupted run: the learning rate at every step, recipe.json and export/recipe.json "
        f"byte for byte, final step {STEPS}, kept checkpoints {kept}, whose tensors read back; weights not "
        f"compared (the input interleave is non-deterministic, so uninterrupted runs differ too); at the kill the "
        f"{len(saved)} indexed checkpoint(s) read back and {len(at_kill)} files under final names were whole, "
        f"temporary names: {', '.join(temporary_at_kill) or 'none'}; none after the rerun ({len(tree)} files)",
        lost=f"nothing; {done_before_kill - saved[-1]} training steps redone (at most one checkpoint interval)")


# -- evaluate ----------------------------------------------------------------------------------------------


def _evaluate_args(model: Path, data: Path) -> list:
    # The 800 training samples twice, under two names, so that the step spends seconds per benchmark.
    return ["evaluate", "--model", model, "--benchmark", f"first={data / 'mjsynth' / 'train'}",
            "--benchmark", f"second={data / 'mjsynth' / 'train'}", "--benchmark", f"IC13={data / 'IC13' / 'test'}"]


def _without_timing(report: dict) -> dict:
    return {**report, "benchmarks": {name: {k: v for k, v in entry.items() if k != "images_per_sec"}
                                     for name, entry in report["benchmarks"].items()}}


def _table_without_timing(table: str) -> list[str]:
    return [line.rsplit(None, 1)[0] if line.split()[0] not in ("average", "weighted") else line
            for line in table.splitlines()]


@pytest.fixture(scope="module")
def evaluated_reference(trained_reference, converted_reference, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluated-reference")
    _rerun([*_evaluate_args(trained_reference[0] / "export", converted_reference), "--out", out])
    return out


def test_evaluate_killed_between_benchmarks_reruns_to_the_same_report(trained_reference, converted_reference,
                                                                      evaluated_reference, tmp_path, reliability):
    out = tmp_path / "evaluated"
    args = _evaluate_args(trained_reference[0] / "export", converted_reference)
    log = tmp_path / "killed.log"
    proc = _start([*args, "--out", out], log)
    _kill_when(proc, lambda: (out / "errors-first.txt").is_file(), log, "the first benchmark's results")
    at_kill = _final_files(out)
    temporary_at_kill = _temporary(out)
    assert "report.json" not in at_kill and "test_result.txt" not in at_kill

    result = _rerun([*args, "--out", out])
    evaluated = re.findall(r"INFO crnn.steps: (\S+): \d+ images at", result.stderr)
    assert evaluated == ["first", "second", "IC13"]  # not designed to resume: every benchmark again
    report, expected = (json.loads((folder / "report.json").read_text()) for folder in (out, evaluated_reference))
    assert _without_timing(report) == _without_timing(expected)
    assert _table_without_timing((out / "test_result.txt").read_text()) == _table_without_timing(
        (evaluated_reference / "test_result.txt").read_text())
    tree, reference_tree = _final_files(out), _final_files(evaluated_reference)
    review = sorted(name for name in tree if name.startswith(("errors-", "samples-")))
    assert {name: tree[name] for name in review} == {name: reference_tree[name] for name in review}
    assert set(tree) == set(reference_tree)
    assert _temporary(out) == []

    reliability(
        "process", "`crnn evaluate` of three benchmarks SIGKILLed after the first one's review files; the same "
        "command run again",
        f"at the kill {len(at_kill)} file(s) were there ({', '.join(sorted(at_kill))}), each whole, no report.json; "
        f"temporary names {', '.join(temporary_at_kill) or 'none'}; the rerun evaluated all "
        f"{len(evaluated)} benchmarks again (the step does not resume, by design) and wrote a report.json equal "
        f"to an uninterrupted run's but for the measured images_per_sec, and byte-identical review files "
        f"({len(review)})", lost="nothing; the first benchmark's evaluation redone")


# -- register ----------------------------------------------------------------------------------------------

PIPELINE_RUN = "kfp-run-killed-register"


def _logged_models_started(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as connection:
            return connection.execute("SELECT count(*) FROM logged_models").fetchone()[0] > 0
    except sqlite3.OperationalError:  # no database or table yet, or locked for a moment
        return False


def test_register_killed_while_logging_the_model_registers_one_version(trained_reference, evaluated_reference,
                                                                       tmp_path, reliability):
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking import MlflowClient

    from crnn.registry.gate import GateRule, decide
    from crnn.registry.pyfunc import EXPORT_ARTIFACT
    from crnn.registry.register import CANDIDATE, CHAMPION, VERSION_PIPELINE_RUN_TAG, lineage_tags
    from crnn.tracking import sqlite_uri

    db = tmp_path / "mlflow.db"
    uri = sqlite_uri(db)
    export = trained_reference[0] / "export"
    args = ["register", "--model", export, "--report", evaluated_reference / "report.json", "--tracking-uri", uri,
            "--pipeline-run-id", PIPELINE_RUN, "--min-average", 0.0]
    log = tmp_path / "killed.log"
    proc = _start(args, log)
    _kill_when(proc, lambda: _logged_models_started(db), log, "the model being logged")
    client = MlflowClient(uri)
    query = f"name = 'crnn' and tags.{VERSION_PIPELINE_RUN_TAG} = '{PIPELINE_RUN}'"
    at_kill = len(client.search_model_versions(query))

    result = _rerun(args)
    reused = f"is already registered by pipeline run {PIPELINE_RUN}" in result.stderr
    assert reused == bool(at_kill)
    versions = client.search_model_versions(query)
    assert len(versions) == 1 and len(client.search_model_versions("name = 'crnn'")) == 1
    version = versions[0]
    assert f"registered crnn version {version.version} as candidate" in result.stdout

    report = json.loads((evaluated_reference / "report.json").read_text())
    decision = decide(report, GateRule(0.0, 1.0), None, None)
    expected_tags = lineage_tags(export, report) | {VERSION_PIPELINE_RUN_TAG: PIPELINE_RUN} | decision.as_tags()
    assert {k: version.tags.get(k) for k in expected_tags} == expected_tags
    aliases = {alias: client.get_model_version_by_alias("crnn", alias).version
               for alias in client.get_registered_model("crnn").aliases}
    assert aliases == ({CANDIDATE: version.version, CHAMPION: version.version} if decision.promote
                       else {CANDIDATE: version.version})

    experiment = client.get_experiment_by_name("crnn").experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    statuses = {model.model_id: model.status for model in models}
    registered = version.source.removeprefix("models:/")
    assert statuses.pop(registered) == LoggedModelStatus.READY
    # The killed attempt's logged model, if it got that far, registered by none and never marked READY.
    assert len(statuses) <= 1 and all(status == LoggedModelStatus.PENDING for status in statuses.values())
    left_by_kill = sum(path.is_file() for model in statuses for path in Path(
        client.get_logged_model(model).artifact_location.removeprefix("file://")).rglob("*"))
    files = _final_files(Path(client.get_logged_model(registered).artifact_location.removeprefix("file://")))
    assert "MLmodel" in files and all(files[f"artifacts/{EXPORT_ARTIFACT}/{name}"] == digest
                                      for name, digest in _final_files(export).items())
    run_states = sorted(run.info.status for run in client.search_runs([experiment], "tags.`crnn.step` = 'register'"))
    assert run_states == ["FINISHED", "RUNNING"]

    verdict = decision.as_tags()["gate.decision"]
    named = ", ".join(f"{alias} -> version {number}" for alias, number in sorted(aliases.items()))
    reliability(
        "process", "`crnn register --pipeline-run-id ID` of an export the train run did not log, SIGKILLed once "
        "it had started logging the model (its logged model created); the same command run again",
        f"{at_kill} version(s) existed at the kill; the rerun "
        f"{'reused' if reused else 'logged the model again and registered'} version {version.version}: exactly "
        f"{len(versions)} version for the pipeline run, "
        f"with its lineage and gate tags; {named} as the gate decided ({verdict}); "
        f"the registered model is READY with the export's files intact; left in the store: the killed "
        f"attempt's run, still RUNNING, and {len(statuses)} logged model of it, PENDING, registered by none "
        f"({left_by_kill} files in its artifact folder)")
