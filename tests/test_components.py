"""Each KFP component on its own, run by kfp.local's SubprocessRunner on tiny data.

Inputs that are artifacts come in through ``dsl.importer`` (the local runner takes no artifact arguments
directly); each test checks what the component wrote, not just that it ran.
"""

import json
from pathlib import Path

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Model

from components.convert import convert
from components.download import download
from components.evaluate import evaluate
from components.register import register
from components.train import train
from crnn.config import Recipe, recipe_for

pytestmark = pytest.mark.component
NO_TRACKING = {"tracking_uri": "", "experiment": "crnn", "job_id": ""}


@pytest.fixture(autouse=True)
def local_runner(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "pipeline_root"))


def test_download_fetches_verifies_and_extracts():
    task = download(datasets=["synthetic"], mirror="", seed=5, train_size=12, val_size=4, test_size=5)
    raw = task.outputs["raw"]
    listing = json.loads(Path(raw.path, "datasets.json").read_text())
    assert [d["name"] for d in listing["datasets"]] == ["mjsynth", "IIIT5K", "SVT", "IC13"]
    files = [f for d in listing["datasets"] for f in d["files"]]
    assert all(f["url"].startswith("file://") and len(f["sha256"]) == 64 for f in files)
    assert (Path(raw.path) / "IC13" / "Challenge2_Test_Task3_Images" / "gt.txt").is_file()
    assert raw.metadata["datasets"] == ["mjsynth", "IIIT5K", "SVT", "IC13"]
    record = json.loads(Path(raw.path, ".crnn-step.json").read_text())  # for log_data_steps to log
    assert record["step"] == "download" and record["params"]["datasets"] == "synthetic" and record["step_time_s"] > 0


def test_convert_writes_shards_and_manifests(raw_dir):
    @dsl.pipeline
    def convert_only() -> Dataset:
        raw = dsl.importer(artifact_uri=str(raw_dir), artifact_class=Dataset)
        return convert(raw=raw.output, val_set="mjsynth/val", benchmarks=["IC13/test"],
                       shard_size=10).outputs["data"]

    data = convert_only().output
    manifest = json.loads(Path(data.path, "mjsynth/val/manifest.json").read_text())
    assert manifest["num_samples"] == 16 and [s["count"] for s in manifest["shards"]] == [10, 6]
    assert data.metadata["num_samples"] == {"IC13/test": 12, "mjsynth/val": 16}
    assert not Path(data.path, "SVT").exists()  # only the splits the run needs


def test_train_exports_a_model(converted_dir):
    @dsl.pipeline
    def train_only() -> Model:
        data = dsl.importer(artifact_uri=str(converted_dir), artifact_class=Dataset)
        return train(train_data=data.output, data=data.output, train_sets=["mjsynth/train", "IIIT5K/test"],
                     val_set="mjsynth/val",
                     preset="tiny", steps=4, batch_size=4, **NO_TRACKING).outputs["model"]

    model = train_only().output
    assert Recipe.load(Path(model.path, "export", "recipe.json")) == recipe_for("tiny", steps=4, batch_size=4)
    assert model.metadata["steps"] == 4
    assert 0 <= model.metadata["val_accuracy"] <= 1


def test_evaluate_reports_one_benchmark(trained_dir, converted_dir):
    @dsl.pipeline
    def evaluate_only() -> Artifact:
        model = dsl.importer(artifact_uri=str(trained_dir), artifact_class=Model)
        data = dsl.importer(artifact_uri=str(converted_dir), artifact_class=Dataset)
        return evaluate(model=model.output, data=data.output, benchmark="SVT/test",
                        **NO_TRACKING).outputs["report"]

    report = json.loads(Path(evaluate_only().output.path, "report.json").read_text())
    assert list(report["benchmarks"]) == ["SVT"]
    assert report["benchmarks"]["SVT"]["num_samples"] == 12


def test_register_creates_a_model_version(trained_dir, converted_dir, sqlite_tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    from crnn import steps

    report_dir = tmp_path / "report"
    steps.evaluate(steps.export_dir(trained_dir), {"IC13": converted_dir / "IC13" / "test"}, report_dir)

    @dsl.pipeline
    def register_only() -> str:
        model = dsl.importer(artifact_uri=str(trained_dir), artifact_class=Model)
        with dsl.ParallelFor([1]):
            collected = dsl.importer(artifact_uri=str(report_dir), artifact_class=Artifact)
        return register(model=model.output, reports=dsl.Collected(collected.output), model_name="crnn-test",
                        tracking_uri=sqlite_tracking, experiment="crnn", job_id="").output

    version = register_only().output
    assert version == "1"
    tags = MlflowClient(sqlite_tracking).get_model_version("crnn-test", "1").tags
    assert "accuracy/IC13" in tags and "accuracy/average" in tags


def test_fanned_out_conversion_equals_one_machine(raw_dir, tmp_path):
    from components.convert import convert_slice, merge_slices, plan_slices
    from crnn.data.convert import convert_all

    @dsl.pipeline
    def fan_out() -> Dataset:
        raw = dsl.importer(artifact_uri=str(raw_dir), artifact_class=Dataset)
        plan = plan_slices(raw=raw.output, train_sets=["mjsynth/train"], shard_size=10, slices=3)
        with dsl.ParallelFor(plan.output) as ranges:
            part = convert_slice(raw=raw.output, ranges=ranges, shard_size=10)
        return merge_slices(raw=raw.output, parts=dsl.Collected(part.outputs["part"]), train_sets=["mjsynth/train"],
                            shard_size=10).outputs["train_data"]

    merged = Path(fan_out().output.path) / "mjsynth" / "train"
    convert_all(raw_dir, tmp_path / "single", shard_size=10, only=["mjsynth/train"])
    single = tmp_path / "single" / "mjsynth" / "train"
    files = sorted(p.name for p in single.iterdir())
    assert len(files) == 11  # ten shards and the manifest
    assert sorted(p.name for p in merged.iterdir()) == files
    assert all((merged / name).read_bytes() == (single / name).read_bytes() for name in files)
