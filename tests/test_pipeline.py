"""The whole pipeline through kfp.local on tiny settings: the MLflow run tree and the registered version."""

import pytest
from mlflow.tracking import MlflowClient

from crnn.tracking import sqlite_uri
from pipelines.local_run import run_locally

pytestmark = pytest.mark.pipeline

STEPS = {"download", "convert", "convert-merge", "train", "evaluate-IIIT5K", "evaluate-SVT", "evaluate-IC13",
         "register"}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    summary = run_locally(out, preset="tiny", steps=6, train_size=64, val_size=8, test_size=10)
    return out, summary


def test_run_tree_metrics_and_params(pipeline_run):
    out, summary = pipeline_run
    client = MlflowClient(sqlite_uri(out / "mlflow" / "mlflow.db"))
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    assert set(summary["accuracy"]) == {"IIIT5K", "SVT", "IC13", "average", "weighted_average"}
    assert parent.data.metrics["accuracy/average"] == pytest.approx(
        sum(summary["accuracy"][b] for b in ("IIIT5K", "SVT", "IC13")) / 3)

    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{summary['run_id']}'")
    by_step = {run.info.run_name: run for run in children}
    assert set(by_step) == STEPS
    assert all(run.info.status == "FINISHED" for run in children)
    assert all("step_time_s" in run.data.metrics for run in children)

    train = by_step["train"]
    assert {"loss", "learning_rate", "step_time_ms", "images_per_sec", "val_accuracy"} <= set(train.data.metrics)
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [2, 4, 6]
    assert train.data.params["preset"] == "tiny"
    assert train.data.params["train.steps"] == "6"
    assert train.data.params["model.lstm_units"] == "16"
    assert len(train.data.params["data.manifest_sha256/mjsynth/train"]) == 64
    for bench in ("IIIT5K", "SVT", "IC13"):
        assert {f"accuracy/{bench}", f"ned/{bench}"} <= set(by_step[f"evaluate-{bench}"].data.metrics)


def test_registered_version_carries_the_accuracies(pipeline_run):
    out, summary = pipeline_run
    client = MlflowClient(sqlite_uri(out / "mlflow" / "mlflow.db"))
    version = client.get_model_version("crnn", summary["model_version"])
    for bench in ("IIIT5K", "SVT", "IC13"):
        assert float(version.tags[f"accuracy/{bench}"]) == pytest.approx(summary["accuracy"][bench], abs=1e-4)
    assert version.run_id in {r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("crnn").experiment_id], "attributes.run_name = 'register'")}
    artifacts = list((out / "mlflow" / "artifacts").rglob("model.keras"))
    assert artifacts, "the model's files are in the embedded store's artifact folder"


def test_the_gate_decides_and_the_run_says_why(pipeline_run):
    """A 6-step tiny model cannot reach the pipeline's default minimum average (0.9): registered as
    ``candidate``, not promoted, with the reason on the version and the parent run."""
    out, summary = pipeline_run
    client = MlflowClient(sqlite_uri(out / "mlflow" / "mlflow.db"))
    assert str(client.get_model_version_by_alias("crnn", "candidate").version) == summary["model_version"]
    assert summary["gate"]["decision"] == "rejected"
    assert summary["gate"]["average"].startswith("fail: ")
    version = client.get_model_version("crnn", summary["model_version"])
    assert version.tags["gate.decision"] == "rejected" and "champion" not in version.aliases
