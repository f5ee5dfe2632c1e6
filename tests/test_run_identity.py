"""What every KFP backend gives a task about its run: the job id (a literal placeholder before 2.5), the
credentials mounted from optional Secrets, and the pipeline's ending decided from MLflow, not from a final
status only newer backends pass."""

import os

import pytest
from mlflow.tracking import MlflowClient

from components.run_tracking import finish_run, start_run
from crnn.credentials import export_mounted_secrets
from crnn.job_id import RUN_ID_ENV, pipeline_job_id
from crnn.tracking import OUTCOME_TAG, PARENT_TAG, STEP_TAG, Tracking, end_pipeline_run, start_pipeline_run

JOB_ID = "{{$.pipeline_job_uuid}}"  # what KFP before 2.5 hands a task (driver.go @ 2.4.1)
JOB_NAME = "{{$.pipeline_job_name}}"
RUN_ID = "8d0c2a47-5b1e-4c4f-9d2e-0f6b7a1c3e21"


def test_a_resolved_job_id_is_taken_as_it_is(monkeypatch):
    monkeypatch.setenv(RUN_ID_ENV, "from-the-label")
    assert pipeline_job_id("run-42") == "run-42"


def test_an_unresolved_job_id_is_the_pods_run_id(monkeypatch):
    monkeypatch.setenv(RUN_ID_ENV, RUN_ID)
    assert pipeline_job_id(JOB_ID) == RUN_ID


def test_an_unresolved_job_id_without_the_label_is_refused(monkeypatch):
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    with pytest.raises(ValueError, match=RUN_ID_ENV):
        pipeline_job_id(JOB_ID)


def test_the_run_tasks_find_one_parent_per_run_from_the_literal_placeholder(sqlite_tracking, monkeypatch, tmp_path):
    """start_run and finish_run as a 2.4 backend runs them: the placeholders literal, the run id from the pod's
    label. Two runs get two parent runs, and each task finds its own; the exit task removes its run's folder."""
    client = MlflowClient(sqlite_tracking)
    parents = {}
    for run_id in (RUN_ID, "another-run"):
        monkeypatch.setenv(RUN_ID_ENV, run_id)
        parents[run_id] = start_run.python_func(tracking_uri=sqlite_tracking, experiment="crnn", run_name="",
                                                job_name=JOB_NAME, job_id=JOB_ID, artifact_location="")
        assert Tracking(sqlite_tracking, pipeline_run_id=JOB_ID).resolved() == (sqlite_tracking, parents[run_id])
    assert len(set(parents.values())) == 2
    assert client.get_run(parents[RUN_ID]).info.run_name == f"crnn-{RUN_ID}"
    monkeypatch.setenv(RUN_ID_ENV, RUN_ID)
    for run_id in (RUN_ID, "another-run"):
        (tmp_path / "runs" / run_id / "train").mkdir(parents=True)  # checkpoints a train task left
    finish_run.python_func(tracking_uri=sqlite_tracking, experiment="crnn", job_id=JOB_ID, data_root=str(tmp_path))
    assert client.get_run(parents[RUN_ID]).info.status == "FAILED"  # no step ran
    assert client.get_run(parents["another-run"]).info.status == "RUNNING"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["another-run"]


def _step(client: MlflowClient, parent: str, step: str, status: str) -> str:
    experiment_id = client.get_run(parent).info.experiment_id
    run = client.create_run(experiment_id, run_name=step, tags={PARENT_TAG: parent, STEP_TAG: step})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


# Each row: the step runs a pipeline run leaves, and how its parent run must end. What the backend would have
# said of the same run does not enter: it is COMPLETE or FAILED where it is right, RUNNING on 2.14-2.16 for
# either (a ParallelFor in the exit handler, kubeflow/pipelines#13321) and absent before 2.14.
ENDINGS = {
    "every step finished": ([("download", "FINISHED"), ("train", "FINISHED"), ("evaluate-IC13", "FINISHED"),
                             ("evaluate-SVT", "FINISHED"), ("register", "FINISHED")], "FINISHED"),
    "a benchmark failed in the ParallelFor": ([("train", "FINISHED"), ("evaluate-IC13", "FINISHED"),
                                               ("evaluate-SVT", "FAILED")], "FAILED"),
    "a step retried by KFP, then finished": ([("download", "FAILED"), ("download", "FINISHED"),
                                              ("register", "FINISHED")], "FINISHED"),
    "a pod lost while its step ran": ([("download", "FINISHED"), ("train", "RUNNING")], "FAILED"),
    "stopped before any step": ([], "FAILED"),
    "the register step failed": ([("evaluate-SVT", "FINISHED"), ("register", "FAILED")], "FAILED"),
}


@pytest.mark.parametrize("case", sorted(ENDINGS))
def test_the_parent_run_ends_as_the_pipeline_did(sqlite_tracking, case):
    steps, expected = ENDINGS[case]
    client = MlflowClient(sqlite_tracking)
    parent = start_pipeline_run(sqlite_tracking, case, pipeline_run_id=case)
    children = [_step(client, parent, step, status) for step, status in steps]
    assert end_pipeline_run(sqlite_tracking, case) == parent
    ended = client.get_run(parent)
    assert ended.info.status == expected
    assert ended.data.tags[OUTCOME_TAG].startswith("register finished" if expected == "FINISHED" else "register")
    assert all(client.get_run(child).info.status != "RUNNING" for child in children)  # a lost step: KILLED
    if case == "a benchmark failed in the ParallelFor":
        assert "evaluate-SVT" in ended.data.tags[OUTCOME_TAG]


def _secret(root, name: str, values: dict) -> None:
    """A Secret volume as the kubelet lays it out: each key a link into a timestamped folder."""
    folder = root / name
    (folder / "..2026_12_06_01_00_00.1").mkdir(parents=True)
    os.symlink("..2026_12_06_01_00_00.1", folder / "..data")
    for key, value in values.items():
        (folder / "..data" / key).write_text(value)
        os.symlink(f"..data/{key}", folder / key)


def test_mounted_credentials_become_the_variables_mlflow_and_boto3_read(tmp_path, monkeypatch):
    _secret(tmp_path, "mlflow-client", {"MLFLOW_TRACKING_USERNAME": "ci\n", "MLFLOW_TRACKING_PASSWORD": ""})
    _secret(tmp_path, "crnn-s3", {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cret", "PATH": "/evil"})
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "set-by-the-user")
    path = os.environ["PATH"]
    assert export_mounted_secrets(tmp_path) == ["AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_USERNAME"]
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ci" and os.environ["AWS_ACCESS_KEY_ID"] == "AKIA"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "set-by-the-user"  # the environment wins
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ  # an empty key sets nothing
    assert os.environ["PATH"] == path  # only credential keys


def test_no_secret_mounted_is_nothing_to_do(tmp_path):
    assert export_mounted_secrets(tmp_path / "absent") == []


def test_recorded_steps_span_their_own_start_and_end(sqlite_tracking, tmp_path):
    """A data step logged after the fact (log-data-steps) shows when it ran and how long, not when it was logged."""
    import json

    from crnn.tracking import STEP_RECORD, log_step_records

    finished_at = 1_800_000_000.0
    (tmp_path / STEP_RECORD).write_text(json.dumps({
        "step": "download", "params": {"samples/mjsynth/train": 40000}, "metrics": {}, "tags": {},
        "step_time_s": 81.5, "finished_at": finished_at}))
    parent = start_pipeline_run(sqlite_tracking, "spans", pipeline_run_id="spans")
    assert log_step_records([tmp_path], Tracking(sqlite_tracking, parent_run_id=parent)) == ["download"]
    client = MlflowClient(sqlite_tracking)
    [child] = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'")
    assert (child.info.start_time, child.info.end_time) == (int((finished_at - 81.5) * 1000), int(finished_at * 1000))
    assert child.data.params["samples/mjsynth/train"] == "40000" and "samples/mjsynth/train" not in child.data.metrics
