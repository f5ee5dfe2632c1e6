"""Storage faults (issue 8): S3 answering errors for a while, or for good, under a download and under an MLflow
artefact upload (a fault-injecting proxy in front of moto); a disk filling up while shards and checkpoints are
written (a small tmpfs where this process may mount one, else a file size limit on the child process).

Each case records what it observed: the proxy's counts, the bytes verified, the files left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from crnn.files import sha256_of
from tests.fault_proxy import FaultProxy
from tests.test_cli import CRNN

pytestmark = pytest.mark.reliability

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}
FULL_DISK = r"(No space left on device|File too large)"  # ENOSPC on the tmpfs, EFBIG under the file size limit
SMALL_DISK_MB = 8


# --- S3 behind a fault-injecting proxy --------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def proxy(moto_url):
    proxy = FaultProxy(moto_url).start()
    yield proxy
    proxy.stop()


def _bucket(moto_url: str, name: str):
    """A client straight to moto (not through the proxy), with bucket ``name`` created."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client


def _archive() -> bytes:
    """An SVTP-format tar.gz of about 200 KB (a word image and incompressible padding)."""
    from tests.layouts import tar_bytes, word_png

    members = {"svtp/gt.txt": b"1.png WYNDHAM\n", "svtp/1.png": word_png("WYNDHAM"),
               "svtp/padding.bin": random.Random(8).randbytes(200_000)}
    return tar_bytes(members, "w:gz")


def _counts(proxy: FaultProxy) -> str:
    counts = proxy.counts
    return (f"the proxy injected {sum(counts.injected.values())} errors ({_listing(counts.injected_codes)}; "
            f"by method {_listing(counts.injected)}) and forwarded {sum(counts.forwarded.values())} requests "
            f"({_listing(counts.forwarded)})")


def _listing(counter) -> str:
    return ", ".join(f"{key} x{value}" for key, value in sorted(counter.items())) or "none"


def test_s3_errors_for_a_while_during_a_download_are_retried(moto_url, proxy, tmp_path, monkeypatch, capsys,
                                                             reliability):
    from crnn.cli import main

    archive = _archive()
    digest = hashlib.sha256(archive).hexdigest()
    _bucket(moto_url, "downloads").put_object(Bucket="downloads", Key="ocr/svtp.tar.gz", Body=archive)
    proxy.reset()
    proxy.fail(2, {"HEAD"})
    proxy.fail(2, {"GET"})
    for key, value in (AWS | {"AWS_ENDPOINT_URL": proxy.url}).items():
        monkeypatch.setenv(key, value)
    raw = tmp_path / "raw"
    started = time.monotonic()
    status = main(["download", "custom", "--source", "s3://downloads/ocr/svtp.tar.gz", "--format", "svtp",
                   "--sha256", digest, "--out", str(raw)])
    elapsed = time.monotonic() - started
    assert status == 0

    fetched = raw / "archives" / "custom" / "svtp.tar.gz"
    assert sha256_of(fetched) == digest and fetched.stat().st_size == len(archive)
    assert (raw / "custom" / "svtp" / "gt.txt").read_text() == "1.png WYNDHAM\n"
    assert f"sha256 {digest}  s3://downloads/ocr/svtp.tar.gz" in capsys.readouterr().out
    injected, forwarded = proxy.counts.injected, proxy.counts.forwarded
    assert injected == {"HEAD": 2, "GET": 2}  # every planned error was met, and retried past
    assert forwarded["HEAD"] >= 1 and forwarded["GET"] >= 1
    reliability("storage", "S3 answers the first 2 HEAD and the first 2 GET requests of a download with 503 "
                "SlowDown / 500 InternalError (fault proxy in front of moto)",
                f"crnn download (the CLI's main, in this process) succeeded in {elapsed:.1f} s: {_counts(proxy)}; "
                f"boto3's standard retry mode retried each; the {fetched.stat().st_size}-byte archive matched its "
                "sha256 and was extracted")


def test_s3_down_for_good_during_a_download_is_a_clear_error(moto_url, proxy, tmp_path, monkeypatch,
                                                              reliability):
    from crnn.data.fetch import RetryPolicy, fetch

    _bucket(moto_url, "outage").put_object(Bucket="outage", Key="ocr/svtp.tar.gz", Body=_archive())
    for key, value in (AWS | {"AWS_ENDPOINT_URL": proxy.url}).items():
        monkeypatch.setenv(key, value)
    proxy.reset()
    proxy.fail(10_000)
    dest = tmp_path / "archives" / "svtp.tar.gz"
    with pytest.raises(ConnectionError) as failure:
        fetch("s3://outage/ocr/svtp.tar.gz", dest, retry=RetryPolicy(s3_attempts=3))
    message = str(failure.value)
    assert message.startswith("s3://outage/ocr/svtp.tar.gz: S3 answered ") and "after 3 attempt(s)" in message
    left = sorted(p.name for p in dest.parent.iterdir())
    assert left == []  # neither the .part file nor s3transfer's temporary file
    assert sum(proxy.counts.injected.values()) == 3 and not proxy.counts.forwarded
    reliability("storage", "S3 answers every request with 503 SlowDown / 500 InternalError (fault proxy), "
                "fetch limited to 3 attempts per request",
                f"fetch raised ConnectionError after {sum(proxy.counts.injected.values())} requests, all "
                f"answered by the proxy: \"{message}\"; files left in the destination folder: {len(left)}")


# --- MLflow artefacts on S3 behind the proxy --------------------------------------------------------------


@pytest.fixture(scope="class")
def mlflow_on_s3(moto_url, proxy, tmp_path_factory):
    """A real mlflow server whose artefacts go to s3://mlflow/artifacts through the proxy; (server, a client
    straight to moto)."""
    from tests.mlflow_server import MlflowServer

    direct = _bucket(moto_url, "mlflow")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-s3"), artifacts_destination="s3://mlflow/artifacts",
                          env=AWS | {"MLFLOW_S3_ENDPOINT_URL": proxy.url}).start()
    yield server, direct
    server.stop()


def _new_run(server) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.url)
    return client.create_run(client.create_experiment(f"storage-{uuid.uuid4().hex[:8]}")).info.run_id


def _stored(direct, run_id: str, name: str) -> list[str]:
    listed = direct.list_objects_v2(Bucket="mlflow", Prefix="artifacts/").get("Contents", [])
    return [o["Key"] for o in listed if o["Key"].endswith(f"/{run_id}/artifacts/{name}")]


class TestArtefactUploadToS3:
    """The two cases share one mlflow server, stopped as soon as they are done (it takes longer to stop the
    longer it has idled)."""

    def test_s3_errors_for_a_while_during_an_artifact_upload_are_retried(self, mlflow_on_s3, proxy, tmp_path,
                                                                          caplog, reliability):
        from mlflow.tracking import MlflowClient

        from crnn.tracking import StepRun

        server, direct = mlflow_on_s3
        run_id = _new_run(server)
        payload = random.Random(81).randbytes(300_000)
        artifact = tmp_path / "model.keras"
        artifact.write_bytes(payload)
        caplog.set_level(logging.DEBUG, "urllib3")
        proxy.reset()
        proxy.fail(4, {"PUT"})  # more than the server's boto3 tries for one request
        started = time.monotonic()
        StepRun(run_id, server.url).log_artifact(artifact, "model")
        elapsed = time.monotonic() - started

        back = Path(MlflowClient(server.url).download_artifacts(run_id, "model/model.keras", str(tmp_path / "back")))
        assert back.read_bytes() == payload
        [key] = _stored(direct, run_id, "model/model.keras")
        assert direct.get_object(Bucket="mlflow", Key=key)["Body"].read() == payload
        client = [r.getMessage() for r in caplog.records if "mlflow-artifacts" in r.getMessage()]
        retries = sum("Incremented Retry" in m for m in client)
        answered_500 = sum(bool(re.search(r'"PUT \S+ HTTP/1.1" 500 ', m)) for m in client)
        resets = sum("connection broken" in m for m in client)
        assert proxy.counts.injected == {"PUT": 4} and proxy.counts.forwarded["PUT"] == 1
        assert answered_500 >= 1  # the server's own retries were not enough: the client sent the upload again
        reliability("storage", "S3 answers the first 4 PutObject requests of an MLflow artefact upload (mlflow server "
                    "with --artifacts-destination s3://, MLFLOW_S3_ENDPOINT_URL at the fault proxy) with 503 SlowDown "
                    "/ 500 InternalError",
                    f"StepRun.log_artifact returned after {elapsed:.1f} s: {_counts(proxy)}; the server's boto3 "
                    f"retried within each request, and the MLflow client sent the upload {retries + 1} times "
                    f"({answered_500} answered HTTP 500 when the server's boto3 gave up, {resets} connection reset, "
                    f"then 200); the {len(payload)}-byte artefact read back through the server and straight from the "
                    "bucket was byte-identical")


    def test_s3_down_for_good_during_an_artifact_upload_is_a_clear_error(self, mlflow_on_s3, proxy, tmp_path,
                                                                          monkeypatch, reliability):
        from mlflow.exceptions import MlflowException

        from crnn.tracking import StepRun

        server, direct = mlflow_on_s3
        run_id = _new_run(server)
        artifact = tmp_path / "lost.bin"
        artifact.write_bytes(b"x" * 50_000)
        # The client's own retries (default 7, with back-off: minutes) cut to 1 to keep the test short.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        proxy.reset()
        proxy.fail(10_000, {"PUT"})
        with pytest.raises(MlflowException) as failure:
            StepRun(run_id, server.url).log_artifact(artifact, "outage")
        message = str(failure.value)
        assert f"{run_id}/artifacts/outage/lost.bin" in message
        assert _stored(direct, run_id, "outage/lost.bin") == []
        assert not proxy.counts.forwarded["PUT"]
        reliability("storage", "S3 answers every PutObject of an MLflow artefact upload with 503 SlowDown / 500 "
                    "InternalError; the MLflow client allowed 1 retry",
                    f"log_artifact raised MlflowException after {proxy.counts.injected['PUT']} PutObject attempts, "
                    f"all failed by the proxy, naming the artefact (\"...{message[message.find('/artifacts/'):][:90]}"
                    "...\"); no object under the run's artefact path in the bucket")


# --- A full disk ------------------------------------------------------------------------------------------


@dataclass
class SmallDisk:
    """A folder whose writes run out of room: a tmpfs mounted there, with a filler file taking all but the
    room asked for; or, where mounting is not allowed, a per-file size limit (RLIMIT_FSIZE) on the child
    process, so that its writes past it fail with EFBIG."""

    root: Path
    mounted: bool
    file_limit: int | None = None
    left: int = 0  # bytes free on the tmpfs once filled

    def leave(self, free: int, file_limit: int) -> None:
        if self.mounted:
            with open(self.root / ".filler", "wb") as filler:
                filler.write(bytes(self.free() - free))
            self.left = self.free()
        else:
            self.file_limit = file_limit

    def make_room(self) -> None:
        (self.root / ".filler").unlink(missing_ok=True)
        self.file_limit = None

    def describe(self) -> str:
        if self.mounted:
            return f"a {SMALL_DISK_MB} MiB tmpfs filled up to {self.left // 1024} KiB free"
        return f"a file size limit (RLIMIT_FSIZE) of {self.file_limit // 1024} KiB on the process: writes past it fail"

    def free(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def crnn(self, *args) -> subprocess.CompletedProcess:
        """``crnn ARGS`` in a child process, under the file size limit when there is one."""
        command = [*CRNN, *map(str, args)]
        if self.file_limit:
            limit = ("import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                     f"resource.setrlimit(resource.RLIMIT_FSIZE, ({self.file_limit}, {self.file_limit})); "
                     "runpy.run_module('crnn.cli', run_name='__main__')")
            command = [sys.executable, "-c", limit, *map(str, args)]
        environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | QUIET
        return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def _mount_tmpfs(root: Path) -> bool:
    """Whether a small tmpfs could be mounted on ``root`` (as root, unless CRNN_TEST_NO_MOUNT is set)."""
    mount = shutil.which("mount")
    if not mount or os.geteuid() != 0 or os.environ.get("CRNN_TEST_NO_MOUNT"):
        return False
    command = [mount, "-t", "tmpfs", "-o", f"size={SMALL_DISK_MB}m", "tmpfs", str(root)]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    root = tmp_path / "small-disk"
    root.mkdir()
    mounted = _mount_tmpfs(root)
    yield SmallDisk(root, mounted)
    if mounted:
        subprocess.run(["umount", "--lazy", str(root)], check=False)


def _tree(folder: Path, hidden: bool = False) -> dict[str, bytes]:
    """The files under ``folder`` (without hidden ones unless asked): what a reader of the folder sees."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (hidden or not any(part.startswith(".") for part in p.relative_to(folder).parts))}


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_full_disk_while_writing_shards_keeps_the_previous_conversion(raw_dir, small_disk, tmp_path, caplog,
                                                                         reliability):
    from crnn.data.convert import convert_all

    out = small_disk.root / "data"
    split = out / "mjsynth" / "train"
    args = ["convert", "--raw", raw_dir, "--split", "mjsynth/train", "--out", out, "--workers", 1]
    convert_all(raw_dir, out, shard_size=40, only=["mjsynth/train"])  # the previous, complete conversion
    before = _tree(split)
    small_disk.leave(free=150 * 1024, file_limit=64 * 1024)  # a new shard of 32 samples is about 107 KB

    line = _error_line(small_disk.crnn(*args, "--shard-size", 32))  # converting again, with other settings
    fault = f"disk full while converting again into a finished conversion ({small_disk.describe()})"
    assert re.fullmatch(rf"crnn convert: error: \[Errno \d+\] {FULL_DISK} while writing "
                        rf"{re.escape(str(split))}/\.parts/shard-\d{{5}}\.tfrecord", line), line
    assert _tree(split) == before  # the previous manifest and shards, byte for byte
    left = sorted(p.relative_to(split).as_posix() for p in split.rglob("*") if p.is_file())
    assert not [name for name in left if ".tmp-" in name]
    whole = sorted(p.name for p in (split / ".parts").glob("shard-*.json"))
    for figures in whole:  # what a resume will trust is whole
        expected = json.loads((split / ".parts" / figures).read_text())["sha256"]
        assert sha256_of(split / ".parts" / figures.removesuffix(".json")) == expected

    small_disk.make_room()
    caplog.set_level(logging.INFO, "crnn")
    convert_all(raw_dir, out, shard_size=32, only=["mjsynth/train"])  # the same conversion, with room again
    if whole:
        assert f"{len(whole)} shard(s) already written, {3 - len(whole)} to go" in caplog.text
    reference = tmp_path / "reference"
    convert_all(raw_dir, reference, shard_size=32, only=["mjsynth/train"])
    assert _tree(split, hidden=True) == _tree(reference / "mjsynth" / "train", hidden=True)
    reliability("storage", fault,
                f"crnn convert stopped with one line naming the file: \"{line.replace(str(out), 'OUT')}\"; the "
                f"previous manifest and {len(before) - 1} shards were byte-identical afterwards; files left in "
                f"the work folder .parts: {len(left) - len(before)} (plan, {len(whole)} whole shard(s) with their "
                "figures), none under a temporary name; with room again the same conversion kept "
                f"{len(whole)} shard(s), wrote the rest and ended byte-identical to a conversion on a roomy disk")


def test_a_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(converted_dir, small_disk, caplog,
                                                                        reliability):
    from crnn.config import recipe_for
    from crnn.train.loop import train_model

    data = converted_dir / "mjsynth" / "train"
    out = small_disk.root / "run"
    train_model(recipe_for("tiny", steps=4, checkpoint_every=2), data, out)  # ckpt-2 and ckpt-4
    checkpoints = out / "checkpoints"
    before = _tree(checkpoints)
    small_disk.leave(free=200 * 1024, file_limit=200 * 1024)  # a tiny checkpoint is about 600 KB

    args = ["train", "--train", data, "--out", out, "--preset", "tiny", "--steps", 8, "--checkpoint-every", 2]
    line = _error_line(small_disk.crnn(*args))
    fault = f"disk full while crnn train saves a checkpoint ({small_disk.describe()})"
    assert line.startswith(f"crnn train: error: cannot save checkpoint {checkpoints / 'ckpt-6'}: "), line
    assert re.search(FULL_DISK, line), line
    assert line.endswith(f"the last good checkpoint, {checkpoints / 'ckpt-4'}, is kept"), line
    assert _tree(checkpoints) == before  # the index and both checkpoints as they were
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("ckpt-6")) == []

    small_disk.make_room()
    caplog.set_level(logging.INFO, "crnn")
    result = train_model(recipe_for("tiny", steps=6, checkpoint_every=2), data, out)
    assert f"resumed from {checkpoints / 'ckpt-4'} at step 4" in caplog.text
    assert result.steps == 6 and (checkpoints / "ckpt-6.index").is_file()
    reliability("storage", fault,
                f"crnn train stopped at the save of ckpt-6 with one line: \"{line.replace(str(out), 'OUT')}\"; "
                f"the checkpoint index and the {len(before) - 1} files of ckpt-2 and ckpt-4 were unchanged and no "
                "ckpt-6 file or temporary folder was left; with room again train_model resumed from ckpt-4 at step "
                f"4 and reached step {result.steps}")
