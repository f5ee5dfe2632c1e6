"""The CLI is the container's contract: each step runs on its own, in a fresh process, from its flags."""

import json
import os
import subprocess
import sys

import pytest

CRNN = [sys.executable, "-m", "crnn.cli"]


def crnn(*args, check=True, env=None, cwd=None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    result = subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, env=environment,
                            timeout=300, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"crnn {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def test_every_step_runs_on_its_own(tmp_path, sqlite_tracking):
    raw, data, trained, scores = (tmp_path / name for name in ("raw", "data", "trained", "scores"))
    out = crnn("download", "synthetic", "--out", raw, "--train-size", 40, "--val-size", 8, "--test-size", 6).stdout
    assert "IIIT5K" in out and "sha256" in out
    assert {d["name"] for d in json.loads((raw / "datasets.json").read_text())["datasets"]} == {
        "mjsynth", "IIIT5K", "SVT", "IC13", "HeldOut"}

    out = crnn("convert", "--raw", raw, "--out", data, "--shard-size", 16).stdout
    assert "mjsynth/train" in out
    assert json.loads((data / "mjsynth" / "train" / "manifest.json").read_text())["num_samples"] == 40

    out = crnn("train", "--train", data / "mjsynth" / "train", "--out", trained, "--preset", "tiny",
               "--steps", 3, "--batch-size", 4, "--checkpoint-every", 2).stdout
    assert "trained 3 steps" in out
    assert (trained / "export" / "model.keras").is_file()

    out = crnn("evaluate", "--model", trained / "export", "--benchmark", f"IC13={data / 'IC13' / 'test'}",
               "--benchmark", f"SVT={data / 'SVT' / 'test'}", "--out", scores).stdout
    report = json.loads((scores / "report.json").read_text())
    assert set(report["benchmarks"]) == {"IC13", "SVT"}
    assert report["benchmarks"]["IC13"]["num_samples"] == 6
    assert 0 <= report["average"] <= 1
    assert "IC13" in out and (scores / "test_result.txt").read_text() == out
    assert "listed" in out and "evaluated" in out and "images/s" in out
    assert report["benchmarks"]["IC13"]["num_samples_listed"] >= 6
    assert {"frequent_errors", "character_edits", "manifest_sha256"} <= set(report["benchmarks"]["SVT"])
    errors = (scores / "errors-SVT.txt").read_text()
    assert "SVT: most frequent word errors" in errors and "most frequent character edits" in errors
    import cv2

    picture = cv2.imread(str(scores / "samples-IC13.png"))
    assert picture is not None and picture.shape[0] >= 36 + 6 * 64  # a title and a row per sample (6 here)

    out = crnn("register", "--model", trained / "export", "--report", scores / "report.json",
               "--tracking-uri", sqlite_tracking).stdout
    assert "registered crnn version 1" in out and "average" in out and "below the minimum 80.00 %" in out
    out = crnn("register", "--model", trained / "export", "--report", scores / "report.json",
               "--tracking-uri", sqlite_tracking, "--min-average", 0).stdout  # a 3-step model: no minimum
    assert "registered crnn version 2" in out and "decision: promoted" in out

    # The registered champion, fetched by its URI, scores what the folder it came from scored.
    crnn("evaluate", "--model", "models:/crnn@champion", "--benchmark", f"SVT={data / 'SVT' / 'test'}",
         "--out", tmp_path / "champion", "--tracking-uri", sqlite_tracking)
    by_uri = json.loads((tmp_path / "champion" / "report.json").read_text())
    assert by_uri["benchmarks"]["SVT"]["accuracy"] == report["benchmarks"]["SVT"]["accuracy"]
    # Its scores are linked to the model the champion was registered from (the model's page lists them).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sqlite_tracking)
    champion = client.get_model_version_by_alias("crnn", "champion").source.removeprefix("models:/")
    assert [(m.key, m.dataset_name) for m in client.get_logged_model(champion).metrics
            if m.key.startswith("accuracy/")] == [("accuracy/SVT", "SVT")]

    from crnn.model.export import Recognizer

    images = raw / "IC13" / "Challenge2_Test_Task3_Images"
    files = [images / "word_1.png", images / "word_2.png"]
    out = crnn("predict", "--model", trained / "export", *files).stdout
    expected = Recognizer(trained / "export").read([cv2.imread(str(f)) for f in files])
    assert [line.split("\t") for line in out.splitlines()] == [[str(f), t] for f, t in zip(files, expected,
                                                                                           strict=True)]
    folder = tmp_path / "folder"
    folder.mkdir()
    for file in files:
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    result = crnn("predict", "--model", "models:/crnn/1", "--tracking-uri", sqlite_tracking, "--batch-size", 1,
                  folder)
    assert result.stdout.splitlines() == [f"{folder / f.name}\t{t}" for f, t in zip(files, expected, strict=True)]
    assert f"{folder / 'notes.txt'}\t<unreadable image>" in result.stderr


def test_bad_input_gets_a_clear_error(tmp_path):
    result = crnn("convert", "--raw", tmp_path / "nowhere", "--out", tmp_path / "out", check=False)
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere'}: no datasets.json" in result.stderr
    result = crnn("evaluate", "--model", tmp_path, "--benchmark", "IC13", "--out", tmp_path, check=False)
    assert result.returncode == 2 and "expected NAME=DIR" in result.stderr
    result = crnn("predict", "--model", tmp_path / "nowhere", tmp_path, check=False)
    assert result.returncode == 2 and f"{tmp_path / 'nowhere'}: no such model folder" in result.stderr
    result = crnn("predict", "--model", tmp_path, tmp_path, check=False)
    assert result.returncode == 2 and "neither an exported CRNN model" in result.stderr
    result = crnn("predict", "--model", "models:/crnn@nope", "--tracking-uri",
                  f"sqlite:///{tmp_path / 'empty.db'}", tmp_path, check=False)
    assert result.returncode == 2 and "models:/crnn@nope: cannot fetch the model" in result.stderr
    # Without a tracking server MLflow would create an empty ./mlflow.db and say the model is not found.
    result = crnn("predict", "--model", "models:/crnn@champion", tmp_path, check=False, cwd=tmp_path)
    assert result.returncode == 2 and "needs the tracking server" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "r.json").write_text('{"benchmarks": {}, "average": 0}')
    result = crnn("register", "--model", tmp_path, "--report", tmp_path / "r.json", check=False)
    assert result.returncode == 2 and "needs MLflow" in result.stderr


def test_tracking_uri_none_turns_tracking_off_where_the_environment_sets_it(tmp_path):
    store = tmp_path / "env.db"
    crnn("download", "synthetic", "--out", tmp_path / "raw", "--train-size", 4, "--val-size", 2, "--test-size", 2,
         "--tracking-uri", "none", env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, cwd=tmp_path)
    assert not store.exists() and not (tmp_path / "none").exists()
    crnn("download", "synthetic", "--out", tmp_path / "raw2", "--train-size", 4, "--val-size", 2, "--test-size", 2,
         env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, cwd=tmp_path)
    assert store.is_file()  # the same command without it is tracked


@pytest.mark.parametrize("command", ["download", "convert", "train", "evaluate", "register", "predict"])
def test_help_names_each_step(command):
    assert crnn(command, "--help").stdout.startswith("usage: crnn " + command)


def test_download_custom_data_and_convert_one_split(http_root, tmp_path):
    import hashlib
    import tarfile

    from tests.layouts import svtp

    root, base = http_root
    index, _, labels, _ = svtp(tmp_path / "svtp")
    with tarfile.open(root / "svtp.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "svtp", arcname="svtp")
    digest = hashlib.sha256((root / "svtp.tar.gz").read_bytes()).hexdigest()

    result = crnn("download", "custom", "--source", f"{base}/svtp.tar.gz", "--format", "svtp", "--sha256", "0" * 64,
                  "--out", tmp_path / "raw", check=False)
    assert result.returncode == 2 and "sha256 mismatch" in result.stderr
    out = crnn("download", "custom", "--source", f"{base}/svtp.tar.gz", "--format", "svtp", "--sha256", digest,
               "--out", tmp_path / "raw").stdout
    assert digest in out
    out = crnn("convert", "--raw", tmp_path / "raw", "--out", tmp_path / "data").stdout
    assert "custom/test" in out
    manifest = json.loads((tmp_path / "data" / "custom" / "test" / "manifest.json").read_text())
    assert manifest["num_samples"] == len(labels) and manifest["skipped"] == {"malformed_line": 1}

    out = crnn("convert", "--format", "svtp", "--input", tmp_path / "svtp", "--out", tmp_path / "one").stdout
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["num_samples"] == len(labels)
    result = crnn("download", "custom", "--source", f"{base}/svtp.tar.gz", "--out", tmp_path / "x", check=False)
    assert result.returncode == 2 and "--format" in result.stderr
    result = crnn("download", "IC99", "--out", tmp_path / "x", check=False)
    assert result.returncode == 2 and "'IC99' is not in the catalog" in result.stderr
