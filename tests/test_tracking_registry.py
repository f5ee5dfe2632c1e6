"""Steps against a real MLflow store (SQLite): child runs, metrics, the registered pyfunc model."""

import base64
import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from crnn import steps
from crnn.data.shards import manifest_sha256
from crnn.tracking import PIPELINE_RUN_TAG, Tracking, end_pipeline_run, start_pipeline_run


@pytest.fixture
def parent(sqlite_tracking):
    return start_pipeline_run(sqlite_tracking, "unit", pipeline_run_id="job-1")


def test_steps_log_child_runs_of_the_pipeline_run(sqlite_tracking, parent, trained_dir, converted_dir, tmp_path):
    tracking = Tracking(sqlite_tracking, pipeline_run_id="job-1")
    benchmarks = {name: converted_dir / name / "test" for name in ("IC13", "SVT")}
    report = steps.evaluate(steps.export_dir(trained_dir), benchmarks, tmp_path / "scores", tracking)
    version, _ = steps.register(steps.export_dir(trained_dir), [report], tracking, tags={"origin": "test"})
    assert end_pipeline_run(sqlite_tracking, "job-1") == parent  # its register step finished

    client = MlflowClient(sqlite_tracking)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags[PIPELINE_RUN_TAG] == "job-1"
    assert parent_run.data.metrics["accuracy/average"] == pytest.approx(report["average"])
    assert parent_run.data.tags["crnn.model_version"] == version == "1"

    children = client.search_runs([parent_run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    by_name = {run.info.run_name: run for run in children}
    assert set(by_name) == {"evaluate-IC13-SVT", "register"}
    evaluate_run = by_name["evaluate-IC13-SVT"]
    assert {"accuracy/IC13", "ned/IC13", "accuracy/SVT", "ned/SVT", "step_time_s"} <= set(evaluate_run.data.metrics)
    # The benchmarks it read, as the run's dataset inputs: MLflow's Datasets panel, digests the manifests'.
    inputs = {d.dataset.name: d for d in evaluate_run.inputs.dataset_inputs}
    assert set(inputs) == {"IC13", "SVT"}
    assert inputs["SVT"].dataset.digest == manifest_sha256(converted_dir / "SVT" / "test")[:16]
    assert [(t.key, t.value) for t in inputs["SVT"].tags] == [("mlflow.data.context", "evaluation")]
    assert all(run.info.status == "FINISHED" for run in children)

    model_version = client.get_model_version("crnn", version)
    assert model_version.tags["accuracy/IC13"] == f"{report['benchmarks']['IC13']['accuracy']:.4f}"
    assert model_version.tags["origin"] == "test"


def test_a_recorded_data_step_is_logged_later_as_a_child_run_cached_or_not(sqlite_tracking, raw_dir, tmp_path):
    """Cached pipeline tasks record their values beside their output; the task that runs every time logs them,
    tagging a record made before the pipeline run began as cached."""
    import json
    import time

    from crnn.tracking import STEP_RECORD, log_step_records, step_run

    earlier = tmp_path / "earlier"
    with step_run("download", Tracking(record_to=earlier / STEP_RECORD)) as run:
        run.log_params({"datasets": "synthetic"})
        run.log_metrics({"files": 3})
        run.log_metrics({"files": 4})
    time.sleep(0.01)
    parent_id = start_pipeline_run(sqlite_tracking, "unit", pipeline_run_id="job-2")
    now = tmp_path / "now"
    steps.convert(raw_dir, now, ["IC13/test"], tracking=Tracking(record_to=now / STEP_RECORD))
    record = json.loads((now / STEP_RECORD).read_text())
    assert record["step"] == "convert" and int(record["params"]["samples/IC13/test"]) > 0

    logged = log_step_records([earlier, now, tmp_path / "none"], Tracking(sqlite_tracking, pipeline_run_id="job-2"))
    assert logged == ["download", "convert"]
    client = MlflowClient(sqlite_tracking)
    children = {run.info.run_name: run for run in client.search_runs(
        [client.get_run(parent_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")}
    assert set(children) == {"download", "convert"}
    download, convert = children["download"], children["convert"]
    assert download.data.tags["crnn.cached"] == "true" and convert.data.tags["crnn.cached"] == "false"
    assert download.data.params["datasets"] == "synthetic" and download.data.metrics["files"] == 4
    assert convert.data.metrics["step_time_s"] == pytest.approx(record["step_time_s"], abs=0.005)
    assert [m.value for m in client.get_metric_history(convert.info.run_id, "step_time_s")] == [
        pytest.approx(record["step_time_s"], abs=0.005)]  # the step's own time, not the logging task's
    assert all(run.info.status == "FINISHED" for run in children.values())


def test_the_model_the_train_run_logs_is_the_one_scored_and_registered(sqlite_tracking, parent, converted_dir,
                                                                        tmp_path):
    """MLflow 3's lineage: the train run logs the model; evaluate links its scores to it and names it as its
    input; register registers that same model, so the version's source run is the train run."""
    from crnn.config import recipe_for
    from crnn.registry.logged_model import LOGGED_MODEL_FILE

    tracking = Tracking(sqlite_tracking, pipeline_run_id="job-1")
    result = steps.train(recipe_for("tiny"), [converted_dir / "mjsynth" / "train"], tmp_path / "trained",
                         val_dir=converted_dir / "mjsynth" / "val", tracking=tracking)
    model_id = json.loads((result.export_dir / LOGGED_MODEL_FILE).read_text())["model_id"]
    report = steps.evaluate(result.export_dir, {"IC13": converted_dir / "IC13" / "test"}, tmp_path / "scores",
                            tracking)
    version, _ = steps.register(result.export_dir, [report], tracking)

    client = MlflowClient(sqlite_tracking)
    runs = {run.info.run_name: run for run in client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")}
    model = client.get_logged_model(model_id)
    assert model.source_run_id == runs["train"].info.run_id and str(model.status) == "READY"
    assert model.params["preset"] == "tiny" and model.params["model.lstm_units"] == "16"
    assert {(m.key, m.dataset_name, m.run_id) for m in model.metrics} == {
        (key, "IC13", runs["evaluate-IC13"].info.run_id) for key in ("accuracy/IC13", "ned/IC13")}
    assert [m.dataset_digest for m in model.metrics] == [manifest_sha256(converted_dir / "IC13" / "test")[:16]] * 2
    # Each run's description says what it did and links the model's page.
    link = f"[{model_id}](#/experiments/{model.experiment_id}/models/{model_id})"
    assert runs["train"].data.tags["mlflow.note.content"].startswith("Trained the `tiny` preset for 6 steps")
    assert f"Logged model: {link}" in runs["train"].data.tags["mlflow.note.content"]
    assert f"Scored model: {link}" in runs["evaluate-IC13"].data.tags["mlflow.note.content"]
    evaluate_run = client.get_run(runs["evaluate-IC13"].info.run_id)  # a search leaves the models out
    assert [i.model_id for i in evaluate_run.inputs.model_inputs] == [model_id]
    # The Logged models and Datasets of the train run and of the pipeline's parent run.
    for run_id in (runs["train"].info.run_id, parent):
        assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]
    assert {d.dataset.name for d in client.get_run(parent).inputs.dataset_inputs} == {
        "mjsynth/train", "mjsynth/val", "IC13"}
    registered = client.get_model_version("crnn", version)
    assert registered.source == f"models:/{model_id}" and registered.run_id == runs["train"].info.run_id
    register_run = runs["register"].info.run_id
    assert not client.search_logged_models([model.experiment_id], filter_string=f"source_run_id = '{register_run}'")


def test_registered_model_reads_encoded_images_as_its_signature_says(sqlite_tracking, trained_dir, converted_dir,
                                                                    raw_dir, tmp_path):
    import cv2
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    from crnn.model.export import Recognizer

    report = steps.evaluate(steps.export_dir(trained_dir), {"IC13": converted_dir / "IC13" / "test"},
                            tmp_path / "scores")
    version, _ = steps.register(steps.export_dir(trained_dir), [report], Tracking(sqlite_tracking))
    mlflow.set_tracking_uri(sqlite_tracking)
    model = mlflow.pyfunc.load_model(f"models:/crnn/{version}")
    assert [str(spec.type) for spec in model.metadata.get_input_schema().inputs] == ["DataType.binary"]
    assert model.metadata.get_output_schema().input_types() == [mlflow.types.DataType.string]

    folder = raw_dir / "IC13" / "Challenge2_Test_Task3_Images"
    files = [folder / "word_1.png", folder / "word_2.png"]
    expected = Recognizer(steps.export_dir(trained_dir)).read([cv2.imread(str(f)) for f in files])
    assert list(model.predict([f.read_bytes() for f in files])) == expected
    assert list(model.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))) == expected
    # MLflow's REST scoring (`mlflow models serve`): JSON carries the images as base64, in either of its forms.
    encoded = base64.b64encode(files[0].read_bytes()).decode()
    for body in ({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}, {"inputs": [encoded]}):
        answer = invocations(json.dumps(body), "application/json", model, model.metadata.get_input_schema())
        assert (answer.status, json.loads(answer.response)) == (200, {"predictions": expected[:1]})
    with pytest.raises(ValueError, match="input 0: not a decodable image"):
        model.predict([b"not an image"])
    with pytest.raises(MlflowException, match="binary"):  # MLflow's own check, against the signature
        model.predict(np.zeros((2, 32, 100), np.uint8))


def test_step_without_tracking_records_nothing_and_still_works(monkeypatch, trained_dir, converted_dir, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = steps.evaluate(steps.export_dir(trained_dir), {"IC13": converted_dir / "IC13" / "test"},
                            tmp_path / "untracked")
    assert (tmp_path / "untracked" / "report.json").is_file()
    assert not list(tmp_path.rglob("*.db"))
    assert report["benchmarks"]["IC13"]["num_samples"] == 12


def test_relative_sqlite_store_keeps_artifacts_beside_it(tmp_path, monkeypatch):
    from crnn.tracking import ensure_experiment

    monkeypatch.chdir(tmp_path)
    uri = "sqlite:///store/mlflow.db"
    (tmp_path / "store").mkdir()
    experiment = MlflowClient(uri).get_experiment(ensure_experiment(uri, "relative"))
    assert experiment.artifact_location == (tmp_path / "store" / "artifacts").as_uri()


def test_unknown_pipeline_run_is_a_clear_error(sqlite_tracking):
    with pytest.raises(ValueError, match="no MLflow parent run tagged crnn.pipeline_run_id=nope"):
        Tracking(sqlite_tracking, pipeline_run_id="nope").resolved()


def test_a_candidate_becomes_champion_only_when_it_passes_the_gate(sqlite_tracking, trained_dir):
    from mlflow.tracking import MlflowClient

    from crnn import steps
    from crnn.registry.gate import GateRule

    export = steps.export_dir(trained_dir)
    def report(iiit5k: float, svt: float, iiit5k_data: str = "a" * 64) -> dict:
        return {"benchmarks": {name: {"accuracy": accuracy, "correct": round(10 * accuracy), "num_samples": 10,
                                      "data_sha256": data}
                               for name, accuracy, data in (("IIIT5K", iiit5k, iiit5k_data), ("SVT", svt, "b" * 64))}}

    strong, weak = report(0.9, 0.8), report(0.9, 0.7)
    rule = GateRule(min_average=0.5, max_drop_points=2.0)
    first, decision = steps.register(export, [strong], Tracking(sqlite_tracking), name="gated", rule=rule)
    assert decision.promote  # no champion yet: the minimum alone decides
    second, decision = steps.register(export, [weak], Tracking(sqlite_tracking), name="gated", rule=rule)
    assert not decision.promote
    assert decision.reasons() == ["SVT: 70.00 % is 10.00 points below the champion's 80.00 % (allowed: 2.00)"]
    client = MlflowClient(sqlite_tracking)
    assert str(client.get_model_version_by_alias("gated", "champion").version) == first
    assert str(client.get_model_version_by_alias("gated", "candidate").version) == second
    tags = client.get_model_version("gated", second).tags
    assert tags["gate.decision"] == "rejected" and tags["gate.SVT"].startswith("fail: SVT: 70.00 %")
    assert client.get_model_version("gated", first).tags["gate.decision"] == "promoted"
    _, decision = steps.register(export, [weak], Tracking(sqlite_tracking), name="gated",
                                 rule=GateRule(min_average=0.95))
    assert not decision.promote and "average" in decision.reasons()[0]
    # Better figures on another IIIT5K (a synthetic stand-in, another release) earn nothing: not comparable.
    _, decision = steps.register(export, [report(1.0, 0.9, iiit5k_data="c" * 64)], Tracking(sqlite_tracking),
                                 name="gated", rule=rule)
    assert not decision.promote
    assert decision.reasons() == ["IIIT5K: 100.00 % on other data than the champion's 90.00 % "
                                  "(data cccccccccccc, the champion's aaaaaaaaaaaa); no comparison"]
    assert str(client.get_model_version_by_alias("gated", "champion").version) == first


def test_a_retried_register_of_one_pipeline_run_makes_no_second_version(sqlite_tracking, trained_dir):
    from mlflow.tracking import MlflowClient

    from crnn import steps

    report = {"benchmarks": {"SVT": {"accuracy": 0.5, "correct": 5, "num_samples": 10}}}
    export = steps.export_dir(trained_dir)
    first, _ = steps.register(export, [report], Tracking(sqlite_tracking), name="once",
                              tags={"pipeline_run_id": "job-9"})
    again, decision = steps.register(export, [report], Tracking(sqlite_tracking), name="once",
                                     tags={"pipeline_run_id": "job-9"})
    other, _ = steps.register(export, [report], Tracking(sqlite_tracking), name="once",
                              tags={"pipeline_run_id": "job-10"})
    assert first == again == "1" and other == "2"
    versions = MlflowClient(sqlite_tracking).search_model_versions("name = 'once'")
    assert sorted(v.version for v in versions) == [1, 2]
    assert {v.tags["pipeline_run_id"] for v in versions} == {"job-9", "job-10"}
    assert versions[0].tags["git_commit"]  # the lineage went in with the version


def test_a_spooled_score_replays_linked_to_its_model(sqlite_tracking, tmp_path):
    """A score held through an outage keeps its link to the model and dataset it was taken for."""
    from crnn.outbox import Batch
    from crnn.tracking import replay_spool

    client = MlflowClient(sqlite_tracking)
    experiment = client.create_experiment("replay")
    run = client.create_run(experiment)
    model = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
    spool = tmp_path / f"{run.info.run_id}.jsonl"
    linked = ("accuracy/SVT", 0.5, 1000, 0, model.model_id, "SVT", "0123456789abcdef")
    spool.write_text(Batch(metrics=[linked, ("loss", 1.0, 1000, 0)]).to_json() + "\n")
    assert replay_spool(spool, sqlite_tracking) == 2
    assert [(m.key, m.value, m.dataset_name, m.dataset_digest) for m in client.get_logged_model(model.model_id).metrics
            ] == [("accuracy/SVT", 0.5, "SVT", "0123456789abcdef")]
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy/SVT": 0.5, "loss": 1.0}
