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
from crnn.data import store

pytestmark = pytest.mark.component
NO_TRACKING = {"tracking_uri": "", "experiment": "crnn", "job_id": ""}


@pytest.fixture(autouse=True)
def local_runner(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "pipeline_root"))


def _referenced(location: Path, tmp_path: Path) -> str:
    """A folder holding a data step's reference to ``location`` (marked complete), for dsl.importer."""
    store.produce(location, {"made by": "a test fixture"}, lambda out: None)
    ref_dir = tmp_path / f"ref-{location.name}"
    ref_dir.mkdir()
    store.write_ref(ref_dir, location)
    return str(ref_dir)


def test_download_writes_the_data_under_data_root_and_a_reference(tmp_path):
    root = tmp_path / "data"
    task = download(data_root=str(root), datasets=["synthetic"], mirror="", seed=5, train_size=12, val_size=4,
                    test_size=5)
    raw = task.outputs["raw"]
    assert sorted(p.name for p in Path(raw.path).iterdir()) == [store.REF_FILE]  # the artifact: a reference
    location = store.resolve(raw.path)
    assert location.parent == root / "raw"
    listing = json.loads((location / "datasets.json").read_text())
    assert [d["name"] for d in listing["datasets"]] == ["mjsynth", "IIIT5K", "SVT", "IC13", "HeldOut"]
    files = [f for d in listing["datasets"] for f in d["files"]]
    assert all(f["url"].startswith("file://") and len(f["sha256"]) == 64 for f in files)
    assert (location / "IC13" / "Challenge2_Test_Task3_Images" / "gt.txt").is_file()
    assert raw.metadata["datasets"] == ["mjsynth", "IIIT5K", "SVT", "IC13", "HeldOut"]
    record = json.loads((location / ".crnn-step.json").read_text())  # for log_data_steps to log
    assert record["step"] == "download" and record["params"]["datasets"] == "synthetic" and record["step_time_s"] > 0


def test_convert_writes_shards_and_manifests(raw_dir, tmp_path):
    raw_ref = _referenced(raw_dir, tmp_path)

    @dsl.pipeline
    def convert_only() -> Dataset:
        raw = dsl.importer(artifact_uri=raw_ref, artifact_class=Dataset)
        return convert(raw=raw.output, data_root=str(tmp_path / "data"), val_set="mjsynth/val",
                       benchmarks=["IC13/test"], shard_size=10).outputs["data"]

    data = convert_only().output
    location = store.resolve(data.path)
    manifest = json.loads((location / "mjsynth/val/manifest.json").read_text())
    assert manifest["num_samples"] == 16 and [s["count"] for s in manifest["shards"]] == [10, 6]
    assert data.metadata["num_samples"] == {"IC13/test": 12, "mjsynth/val": 16}
    assert not (location / "SVT").exists()  # only the splits the run needs


def test_train_exports_a_model(converted_dir, tmp_path):
    data_ref = _referenced(converted_dir, tmp_path)

    @dsl.pipeline
    def train_only() -> Model:
        data = dsl.importer(artifact_uri=data_ref, artifact_class=Dataset)
        return train(train_data=data.output, data=data.output, train_sets=["mjsynth/train", "IIIT5K/test"],
                     val_set="mjsynth/val",
                     preset="tiny", steps=4, batch_size=4, data_root=str(tmp_path),
                     **NO_TRACKING | {"job_id": "job-4"}).outputs["model"]

    model = train_only().output
    assert [p.name for p in Path(model.path).iterdir()] == ["export"]  # the checkpoints stay in the run's folder
    assert (tmp_path / "runs" / "job-4" / "train" / "checkpoints").is_dir()
    assert Recipe.load(Path(model.path, "export", "recipe.json")) == recipe_for("tiny", steps=4, batch_size=4)
    assert model.metadata["steps"] == 4
    assert 0 <= model.metadata["val_accuracy"] <= 1


def test_evaluate_reports_one_benchmark_and_keeps_it_for_register(trained_dir, converted_dir, tmp_path):
    data_ref = _referenced(converted_dir, tmp_path)

    @dsl.pipeline
    def evaluate_only() -> Artifact:
        model = dsl.importer(artifact_uri=str(trained_dir), artifact_class=Model)
        data = dsl.importer(artifact_uri=data_ref, artifact_class=Dataset)
        return evaluate(model=model.output, data=data.output, benchmark="SVT/test", data_root=str(tmp_path),
                        **NO_TRACKING | {"job_id": "job-9"}).outputs["report"]

    report = json.loads(Path(evaluate_only().output.path, "report.json").read_text())
    assert list(report["benchmarks"]) == ["SVT"]
    assert report["benchmarks"]["SVT"]["num_samples"] == 12
    assert json.loads((tmp_path / "runs" / "job-9" / "reports" / "SVT.json").read_text()) == report


def test_register_creates_a_model_version_from_the_kept_reports(trained_dir, converted_dir, sqlite_tracking,
                                                                  tmp_path):
    from mlflow.tracking import MlflowClient

    from crnn import pipeline_data, steps
    from crnn.tracking import start_pipeline_run

    report_dir = tmp_path / "report"
    steps.evaluate(steps.export_dir(trained_dir), {"IC13": converted_dir / "IC13" / "test"}, report_dir)
    pipeline_data.keep_report(str(tmp_path), "job-3", str(report_dir))
    start_pipeline_run(sqlite_tracking, "unit", pipeline_run_id="job-3")

    @dsl.pipeline
    def register_only() -> str:
        model = dsl.importer(artifact_uri=str(trained_dir), artifact_class=Model)
        return register(model=model.output, benchmarks=["IC13/test"], data_root=str(tmp_path),
                        model_name="crnn-test", tracking_uri=sqlite_tracking, experiment="crnn",
                        job_id="job-3").output

    version = register_only().output
    assert version == "1"
    tags = MlflowClient(sqlite_tracking).get_model_version("crnn-test", "1").tags
    assert "accuracy/IC13" in tags and "accuracy/average" in tags and tags["pipeline_run_id"] == "job-3"


def test_fanned_out_conversion_equals_one_machine(raw_dir, tmp_path):
    from components.convert import convert_slice, merge_slices, plan_slices
    from crnn.data.convert import convert_all

    raw_ref = _referenced(raw_dir, tmp_path)
    root = str(tmp_path / "data")

    @dsl.pipeline
    def fan_out() -> Dataset:
        raw = dsl.importer(artifact_uri=raw_ref, artifact_class=Dataset)
        plan = plan_slices(raw=raw.output, data_root=root, train_sets=["mjsynth/train"], shard_size=10, slices=3)
        with dsl.ParallelFor(plan.output) as part:
            one = convert_slice(raw=raw.output, part=part, shard_size=10)
        return merge_slices(raw=raw.output, plan=plan.output, data_root=root, train_sets=["mjsynth/train"],
                            shard_size=10).after(one).outputs["train_data"]

    location = store.resolve(fan_out().output.path)
    merged = location / "mjsynth" / "train"
    convert_all(raw_dir, tmp_path / "single", shard_size=10, only=["mjsynth/train"])
    single = tmp_path / "single" / "mjsynth" / "train"
    files = sorted(p.name for p in single.iterdir())
    assert len(files) == 11  # ten shards and the manifest
    assert sorted(p.name for p in merged.iterdir()) == files
    assert all((merged / name).read_bytes() == (single / name).read_bytes() for name in files)
    assert not (location / ".slices").exists()  # the slices moved in, their folders gone
