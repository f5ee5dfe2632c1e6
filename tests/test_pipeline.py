"""The whole pipeline through kfp.local on tiny settings, tracked by a real ``mlflow server`` over HTTP: the run
tree, metrics, artifacts, the registered version and its aliases, checked through the REST API."""

import pytest
from mlflow.tracking import MlflowClient

from crnn.data.splits import DEFAULT_BENCHMARKS, benchmark_name

pytestmark = pytest.mark.pipeline

BENCHMARKS = tuple(benchmark_name(key) for key in DEFAULT_BENCHMARKS)  # the held-out one among them
STEPS = {"download", "convert", "convert-merge", "train", *(f"evaluate-{b}" for b in BENCHMARKS), "register"}


def _children(server, parent: dict) -> dict[str, dict]:
    import requests

    response = requests.post(f"{server.url}/api/2.0/mlflow/runs/search", timeout=30, json={
        "experiment_ids": [parent["info"]["experiment_id"]],
        "filter": f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'"})
    response.raise_for_status()
    return {run["info"]["run_name"]: run for run in response.json()["runs"]}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_the_run_tree_over_the_rest_api(tracked_pipeline):
    server, _, summary = tracked_pipeline
    parent = server.api("runs/get", run_id=summary["run_id"])["run"]
    assert parent["info"]["status"] == "FINISHED"
    metrics = _metrics(parent)
    accuracies = [metrics[f"accuracy/{b}"] for b in BENCHMARKS]
    assert metrics["accuracy/average"] == pytest.approx(sum(accuracies) / len(accuracies))

    children = _children(server, parent)
    assert set(children) == STEPS
    assert all(run["info"]["status"] == "FINISHED" for run in children.values())
    assert all("step_time_s" in _metrics(run) for run in children.values())

    note = _tags(parent)["mlflow.note.content"]  # the run page's description: results, gate, step links
    for name, run in children.items():
        assert f"[{name}](#/experiments/{run['info']['experiment_id']}/runs/{run['info']['run_id']})" in note
    # The synthetic stand-ins say so wherever their scores show (they wear the real benchmarks' names).
    assert f"| IIIT5K (synthetic) | {100 * metrics['accuracy/IIIT5K']:.2f} |" in note
    assert summary["synthetic"] == sorted(BENCHMARKS)
    # In the order the steps ran: the data steps' runs span their own times, though logged after the fact.
    order = [note.index(f"[{name}]") for name in ("download", "convert-merge", "train", "register")]
    assert order == sorted(order), note
    assert "Pipeline time: " in note
    assert {"pipeline_time_s", "step_time_s/download", "step_time_s/train", "step_time_s/register"} <= set(metrics)
    assert metrics["step_time_s/train"] == round(_metrics(children["train"])["step_time_s"], 1)
    download = children["download"]["info"]
    assert int(download["end_time"]) - int(download["start_time"]) == pytest.approx(
        1000 * _metrics(children["download"])["step_time_s"], abs=6)  # the metric is to the hundredth
    assert "**Gate: rejected**" in note
    assert f"([crnn version {summary['model_version']}](#/models/crnn/versions/{summary['model_version']}))" in note


def test_training_charts_and_parameters(tracked_pipeline):
    server, _, summary = tracked_pipeline
    train = _children(server, server.api("runs/get", run_id=summary["run_id"])["run"])["train"]
    run_id = train["info"]["run_id"]
    for key in ("loss", "learning_rate", "step_time_ms", "images_per_sec"):
        history = server.api("metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        assert [int(m["step"]) for m in history] == [2, 4, 6], key
    params = {p["key"]: p["value"] for p in train["data"]["params"]}
    assert params["preset"] == "tiny" and params["train.steps"] == "6" and params["model.lstm_units"] == "16"
    assert len(params["data.manifest_sha256/mjsynth/train"]) == 64
    inputs = server.api("runs/get", run_id=run_id)["run"]["inputs"]["dataset_inputs"]
    contexts = {i["dataset"]["name"]: {t["key"]: t["value"] for t in i["tags"]}["mlflow.data.context"] for i in inputs}
    assert contexts == {"mjsynth/train": "training", "mjsynth/val": "validation"}  # the UI's Datasets panel
    assert all(i["dataset"]["digest"] == params["data.manifest_sha256/mjsynth/train"][:16] for i in inputs
               if i["dataset"]["name"] == "mjsynth/train")


def test_artifacts_are_served(tracked_pipeline):
    server, _, summary = tracked_pipeline
    children = _children(server, server.api("runs/get", run_id=summary["run_id"])["run"])
    evaluated = server.api("artifacts/list", run_id=children["evaluate-SVT"]["info"]["run_id"])
    assert {"report.json", "test_result.txt", "samples-SVT.png", "errors-SVT.txt"} <= {
        f["path"] for f in evaluated.get("files", [])}
    assert list((server.root / "artifacts").rglob("model.keras")), "the model's files are in the server's store"


def test_the_candidate_loads_by_alias_over_http_and_reads_images(tracked_pipeline):
    import cv2
    import mlflow.pyfunc

    server, out, _ = tracked_pipeline
    mlflow.set_tracking_uri(server.url)
    model = mlflow.pyfunc.load_model("models:/crnn@candidate")
    images = sorted(out.rglob("*.png"))[:3]
    texts = model.predict([path.read_bytes() for path in images])
    assert len(texts) == 3 and all(isinstance(text, str) for text in texts)
    # JPEG as well as PNG (its text may differ: JPEG's pixels are not the PNG's).
    jpeg = cv2.imencode(".jpg", cv2.imread(str(images[0])), [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    assert len(model.predict([jpeg])) == 1


def test_the_version_its_lineage_and_aliases(tracked_pipeline):
    server, _, summary = tracked_pipeline
    version = server.api("model-versions/get", name="crnn",
                         version=summary["model_version"])["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    for bench in BENCHMARKS:
        assert float(tags[f"accuracy/{bench}"]) == pytest.approx(summary["accuracy"][bench], abs=1e-4)
        assert len(tags[f"data.manifest_sha256/{bench}"]) == 64
    assert len(tags["data.manifest_sha256/mjsynth/train"]) == 64
    assert tags["pipeline_run_id"] and tags["git_commit"]
    assert all(tags[f"data.synthetic/{bench}"] == "true" for bench in BENCHMARKS)
    alias = server.api("registered-models/alias", name="crnn", alias="candidate")["model_version"]
    assert alias["version"] == summary["model_version"]
    model = server.api("registered-models/get", name="crnn")["registered_model"]
    assert {"alias": "candidate", "version": summary["model_version"]} in model["aliases"]
    # The registry's list shows a description's first line: the verdict, not a code fence.
    assert version["description"].splitlines()[0].startswith("Gate: rejected (")


def test_the_gate_decides_and_the_run_says_why(tracked_pipeline):
    """A 6-step tiny model cannot reach the pipeline's default minimum average (0.9): registered as
    ``candidate``, not promoted, with the reason on the version and the parent run."""
    server, _, summary = tracked_pipeline
    assert summary["gate"]["decision"] == "rejected"
    assert summary["gate"]["average"].startswith("fail: ")
    version = MlflowClient(server.url).get_model_version("crnn", summary["model_version"])
    assert version.tags["gate.decision"] == "rejected" and "champion" not in version.aliases


def test_the_artifact_store_carries_references_not_data(tracked_pipeline):
    """What a KFP launcher would upload and download: every task's outputs under the pipeline root. The data
    steps' artifacts hold a reference only, whatever the data's size (the data is under data_root); all but the
    model come to under 1 MB."""
    _, out, _ = tracked_pipeline
    [run_root] = [path for path in (out / "pipeline_root").iterdir() if path.name != "datasets"]
    files = [path for path in run_root.rglob("*") if path.is_file()]
    model = {path for path in files if path.relative_to(run_root).parts[:2] == ("train", "model")}
    assert model and sum(path.stat().st_size for path in set(files) - model) < 1_000_000
    for task, artifact in [("download", "raw"), ("convert", "data"), ("merge-slices", "train_data")]:
        assert [path.name for path in (run_root / task / artifact).iterdir()] == ["data-ref.json"], task
