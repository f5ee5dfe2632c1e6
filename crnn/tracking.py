"""The one place that talks to MLflow about runs: a parent run per pipeline run, a child run per step.

Steps receive a ``StepRun``. With no tracking URI it records nothing, so every step also runs on its own
(from the CLI or a test) without a server; with one, it is a child of the pipeline's parent run and logs the
step's wall time as ``step_time_s`` when it ends.

The pipeline's data steps (download, convert, merge) are cached by KFP, so they must not take the run's id:
it would make every run's cache key new. They record their values into a file beside their output instead
(``Tracking(record_to=...)``, ``STEP_RECORD``), which travels with the output, from the cache too; a task that
runs every time logs those records as child runs (``log_step_records``), each tagged ``crnn.cached`` when it
was made before this pipeline run began.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crnn.outbox import Batch, Outbox, OutboxReport, is_rejection, read_spool
from crnn.run_note import DATASET_DIGEST_LENGTH, NOTE_TAG, pipeline_note
from crnn.run_views import (
    PIPELINE_RUNS_FILTER,
    PIPELINE_RUNS_VIEW,
    SHARED_VIEW_TAG_PREFIX,
    STARTED_AT_TAG,
    VIEW_RUNS,
    metric_order,
    pipeline_runs_view,
)

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
STEP_TAG = "crnn.step"
PIPELINE_RUN_TAG = "crnn.pipeline_run_id"
CACHED_TAG = "crnn.cached"
OUTCOME_TAG = "crnn.outcome"  # why the parent run ended as it did
GIT_COMMIT_TAG, SOURCE_NAME_TAG = "mlflow.source.git.commit", "mlflow.source.name"
FINISHED_AT_TAG = "crnn.finished_at"  # when a recorded step ended (UTC)
STEP_RECORD = ".crnn-step.json"  # a recorded step's values, beside its output
DEFAULT_EXPERIMENT = "crnn"
NO_TRACKING = "none"  # as a tracking URI: no tracking, rather than a file store in a folder of that name
_MAX_PARAM_LENGTH = 6000
_RETRY_SECONDS = 2.0  # between attempts while the tracking server is away


def resolve_tracking_uri(uri: str | None) -> str | None:
    """An explicit URI, else ``MLFLOW_TRACKING_URI``, else None (tracking off); ``none`` is tracking off even
    where that variable is set. The server's credentials, when a Secret of them is mounted, are put where MLflow
    reads them first."""
    from crnn.credentials import export_mounted_secrets

    export_mounted_secrets()
    if uri is not None and uri.strip().lower() == NO_TRACKING:
        return None
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def sqlite_uri(db_file: Path) -> str:
    return f"sqlite:///{Path(db_file).resolve()}"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


class StepRun:
    """Logging into one MLflow run, or into nothing when ``run_id`` is None.

    With an ``outbox`` the values are sent in the background and survive a tracking outage (``crnn.outbox``);
    without one each call sends at once.
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None,
                 parent_run_id: str | None = None, outbox: Outbox | None = None, experiment_id: str | None = None):
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id  # known where the run is made: asking later needs the server
        self._mlflow = _client(tracking_uri) if run_id else None
        self.outbox = outbox

    @property
    def enabled(self) -> bool:
        return self._mlflow is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._post(Batch(params={key: str(value)[:_MAX_PARAM_LENGTH] for key, value in params.items()}))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """``model_id``: the logged model the values score, on the ``dataset`` (name, manifest digest) they
        were taken on, which MLflow shows on that model's page; without a model, no link."""
        now = int(time.time() * 1000)
        name, digest = dataset or (None, None)
        linked = (model_id, name, digest and digest[:DATASET_DIGEST_LENGTH]) if model_id else ()
        self._post(Batch(metrics=[(key, float(value), now, step or 0, *linked) for key, value in metrics.items()]))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._post(Batch(tags={key: str(value) for key, value in tags.items()}))

    def send(self, batch: Batch) -> None:
        """Sends one batch now: its values, then the run's end if it carries one."""
        from mlflow.entities import Param, RunTag

        if batch.metrics or batch.params or batch.tags:
            self._mlflow.log_batch(self.run_id, metrics=[_metric(m) for m in batch.metrics],
                                   params=[Param(k, v) for k, v in batch.params.items()],
                                   tags=[RunTag(k, v) for k, v in batch.tags.items()])
        if batch.status:
            self._mlflow.set_terminated(self.run_id, batch.status, batch.end_time)

    def _post(self, batch: Batch) -> None:
        if not self.enabled:
            return
        if self.outbox is not None:
            self.outbox.put(batch)
        else:
            self.send(batch)

    @contextlib.contextmanager
    def system_metrics(self) -> Iterator[None]:
        """MLflow's system metrics (CPU, memory, disk, network, GPU) sampled into this run meanwhile."""
        if not self.enabled:
            yield
            return
        import inspect

        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        if "tracking_uri" not in inspect.signature(SystemMetricsMonitor).parameters:
            # MLflow 2.x (the client on Ascend's Python 3.9 stack) would send them to its global tracking URI.
            log.info("system metrics left out: this MLflow's monitor cannot be pointed at %s", self.tracking_uri)
            yield
            return
        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=5, tracking_uri=self.tracking_uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self._mlflow.log_artifact(self.run_id, str(path), artifact_path)

    def log_model_input(self, model_id: str) -> None:
        """The logged model this run used (the evaluate runs: the model they scored). Sent at once; a server
        that cannot take it costs the link, not the step."""
        if not self.enabled:
            return
        from mlflow.entities import LoggedModelInput
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow.log_inputs(self.run_id, models=[LoggedModelInput(model_id)])
        except MlflowException as error:
            log.warning("run %s: the model it used was not logged: %s", self.run_id, str(error)[:300])

    def log_datasets(self, splits: Mapping[str, tuple[Path, str]], context: str) -> None:
        """The converted splits the step reads, as dataset inputs of its run and of the pipeline's parent run
        (the UI's Datasets panel): each named by its key (``mjsynth/train``), its digest the manifest's,
        ``context`` training, validation or evaluation. Sent at once; a server that refuses them costs the
        panel, not the step."""
        if not self.enabled or not splits:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        inputs = [DatasetInput(Dataset(name=key, digest=digest[:DATASET_DIGEST_LENGTH], source_type="local",
                                       source=json.dumps({"uri": str(path)})),
                               tags=[InputTag("mlflow.data.context", context)])
                  for key, (path, digest) in splits.items()]
        try:
            for run_id in filter(None, (self.run_id, self.parent_run_id)):
                self._mlflow.log_inputs(run_id, datasets=inputs)
        except MlflowException as error:
            log.warning("run %s: its datasets were not logged: %s", self.run_id, str(error)[:300])


def _metric(value: Sequence[Any]) -> Any:
    """An MLflow Metric from a Batch's tuple; the model and dataset it is linked to, when there are any, by
    name (MLflow 2's Metric has no such fields, and none is linked there)."""
    from mlflow.entities import Metric

    key, number, timestamp, step, *linked = value
    names = ("model_id", "dataset_name", "dataset_digest")
    return Metric(key, number, timestamp, step, **{name: field for name, field in zip(names, linked) if field})


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT,
                      artifact_location: str | None = None) -> str:
    """The experiment's id, creating it (with its artifact location) on first use.

    For an embedded SQLite store the artifacts default to ``artifacts/`` beside the database, not MLflow's
    ``./mlruns`` under whatever the working directory happens to be.
    """
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        # The kind makes the MLflow UI open the experiment in its model-training view, not the GenAI one.
        return client.create_experiment(name, artifact_location=artifact_location or _default_artifacts(tracking_uri),
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _default_artifacts(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


def start_pipeline_run(tracking_uri: str, run_name: str, pipeline_run_id: str,
                       experiment: str = DEFAULT_EXPERIMENT, artifact_location: str | None = None) -> str:
    """Creates the parent run of one pipeline run and returns its id."""
    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={PIPELINE_RUN_TAG: pipeline_run_id, STEP_TAG: "pipeline"} | _source_tags())
    log.info("MLflow parent run %s in experiment %s", run.info.run_id, experiment)
    return run.info.run_id


def find_pipeline_run(tracking_uri: str, pipeline_run_id: str, experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """The parent run of a pipeline run, found by its tag (tasks cannot all be handed the id: see below)."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'",
                              max_results=1) if found else []
    return runs[0].info.run_id if runs else None


def end_pipeline_run(tracking_uri: str, pipeline_run_id: str, experiment: str = DEFAULT_EXPERIMENT,
                     final_step: str = "register") -> str | None:
    """Ends the parent run of a pipeline run, FINISHED if its ``final_step`` finished, else FAILED, its
    description summing up the steps; returns its id, None if there is none.

    Decided from the step runs, not from the status KFP hands an exit task: that exists only from backend
    2.14 on, and says RUNNING on 2.14 to 2.16 when the exit handler holds a ParallelFor
    (kubeflow/pipelines#13321). A step run still RUNNING now has lost its pod: it is ended KILLED."""
    run_id = find_pipeline_run(tracking_uri, pipeline_run_id, experiment)
    if run_id is None:
        log.warning("no MLflow run is tagged %s=%s; nothing to end", PIPELINE_RUN_TAG, pipeline_run_id)
        return None
    client = _client(tracking_uri)
    parent = client.get_run(run_id)
    found = f"tags.`{PARENT_TAG}` = '{run_id}'"
    children = client.search_runs([parent.info.experiment_id], found)
    lost = [child for child in children if child.info.status == "RUNNING"]
    for child in lost:
        client.set_terminated(child.info.run_id, "KILLED")
    if lost:  # the description lists them as they are now
        children = client.search_runs([parent.info.experiment_id], found)
    status, reason = pipeline_outcome(children, final_step)
    log.info("pipeline run %s: %s (%s)", pipeline_run_id, status, reason)
    _log_times(client, parent, children)
    parent = client.get_run(run_id)
    client.set_tag(run_id, NOTE_TAG, pipeline_note(parent, children))
    client.set_tag(run_id, OUTCOME_TAG, reason)
    client.set_terminated(run_id, status)
    _save_runs_view(client, parent, children)
    return run_id


def _log_times(client: Any, parent: Any, children: Sequence[Any]) -> None:
    """The pipeline's wall time and each step's on the parent run, where the runs table shows them as columns
    beside the accuracies (rounded to tenths: the table prints every digit it gets)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric("pipeline_time_s", round((now - parent.info.start_time) / 1000, 1), now, 0)]
    for child in children:
        seconds, step = child.data.metrics.get("step_time_s"), child.data.tags.get(STEP_TAG)
        if seconds is not None and step and child.info.status == "FINISHED":
            metrics.append(Metric(f"step_time_s/{step}", round(seconds, 1), now, 0))
    client.log_batch(parent.info.run_id, metrics=metrics)


def _save_runs_view(client: Any, parent: Any, children: Sequence[Any]) -> None:
    """The experiment's saved view of pipeline runs (``crnn.run_views``): the metrics of its latest pipeline
    runs as columns, this run's steps in the order they ran. Made from those runs each time, so two pipeline
    runs ending together write the same view, and its size is bounded. A view that cannot be written costs
    the view, not the run."""
    from mlflow.exceptions import MlflowException

    steps = [child.data.tags.get(STEP_TAG, "") for child in sorted(children, key=lambda run: run.info.start_time)]
    experiment_id = parent.info.experiment_id
    try:
        latest = client.search_runs([experiment_id], PIPELINE_RUNS_FILTER, max_results=VIEW_RUNS,
                                    order_by=["attributes.start_time DESC"])
        keys = {key for run in [parent, *latest] for key in run.data.metrics}
        client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + PIPELINE_RUNS_VIEW,
                                  pipeline_runs_view(metric_order(keys, steps)))
    except MlflowException as error:
        log.warning("the saved view of pipeline runs was not updated: %s", str(error)[:300])


def pipeline_outcome(children: Sequence[Any], final_step: str = "register") -> tuple[str, str]:
    """(FINISHED or FAILED, why) for a pipeline run whose step runs are ``children``: it succeeded when its
    final step finished, whatever earlier attempts of a retried step left."""
    ended = {child.data.tags.get(STEP_TAG): child.info.status for child in children
             if child.info.status == "FINISHED"}
    if final_step in ended:
        return "FINISHED", f"{final_step} finished"
    unfinished = sorted({str(child.data.tags.get(STEP_TAG)) for child in children
                         if child.info.status != "FINISHED"} - set(ended))
    return "FAILED", (f"{final_step} did not finish; unfinished steps: {', '.join(unfinished)}" if unfinished
                      else f"{final_step} did not run")


@dataclass(frozen=True)
class Tracking:
    """Where a step logs: a tracking URI and the parent run, given by id or by the pipeline run's id.

    Inside the pipeline, tasks find the parent by the pipeline job's id: kfp.local (2.17) replaces a task
    output handed into a ParallelFor with the loop item, so the parent's id cannot travel as a value.
    """

    tracking_uri: str | None = None
    parent_run_id: str | None = None
    pipeline_run_id: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    record_to: Path | None = None  # record the step's values into this file rather than log them

    @classmethod
    def for_pipeline(cls, tracking_uri: str, experiment: str, job_id: str) -> Tracking:
        """What a pipeline task passes: empty strings stand for "not set"."""
        return cls(tracking_uri or None, pipeline_run_id=job_id or None, experiment=experiment or DEFAULT_EXPERIMENT)

    def resolved(self) -> tuple[str | None, str | None]:
        """(tracking URI or None, parent run id or None)."""
        uri = resolve_tracking_uri(self.tracking_uri)
        if not uri or self.parent_run_id or not self.pipeline_run_id:
            return uri, self.parent_run_id
        from crnn.job_id import pipeline_job_id

        job_id = pipeline_job_id(self.pipeline_run_id)
        parent = find_pipeline_run(uri, job_id, self.experiment)
        if parent is None:
            raise ValueError(f"no MLflow parent run tagged {PIPELINE_RUN_TAG}={job_id} "
                             f"in experiment {self.experiment!r} at {uri}")
        return uri, parent


class RecordingRun(StepRun):
    """A step's values kept for ``STEP_RECORD`` instead of sent: the latest value of each metric."""

    def __init__(self):
        super().__init__()
        self.params: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}

    def _post(self, batch: Batch) -> None:
        self.params.update(batch.params)
        self.tags.update(batch.tags)
        self.metrics.update((key, value) for key, value, *_ in batch.metrics)


@contextlib.contextmanager
def _recorded(step: str, record_to: Path) -> Iterator[StepRun]:
    """The step's values and wall time written to ``record_to`` when it succeeds (a failed step has no output)."""
    from crnn.files import write_json

    run, started = RecordingRun(), time.monotonic()
    yield run
    write_json(record_to, {"step": step, "params": run.params, "metrics": run.metrics, "tags": run.tags,
                           "step_time_s": time.monotonic() - started, "finished_at": time.time()})


@contextlib.contextmanager
def step_run(step: str, tracking: Tracking | None = None, spool_dir: Path | None = None,
             timed: bool = True, span: tuple[float, float] | None = None) -> Iterator[StepRun]:
    """A child run named ``step`` under the parent run (or a top-level run without one); with
    ``tracking.record_to``, a record of its values in that file instead.

    Its values travel through an outbox: an unreachable server delays them (the step goes on) and, if it is
    still away when the step ends, they are spooled under ``spool_dir`` (default: the temporary folder).
    ``timed``: log the step's wall time as ``step_time_s`` at its end. ``span``: the step's own start and end
    (epoch seconds) when it ran before its run is made (a recorded step), so that the run shows when it ran.
    """
    tracking = tracking or Tracking()
    if tracking.record_to is not None:
        with _recorded(step, tracking.record_to) as run:
            yield run
        return
    tracking_uri, parent_run_id = tracking.resolved()
    if not tracking_uri:
        yield StepRun()
        return
    run_id, experiment_id = _create_step_run(tracking_uri, parent_run_id, step, tracking.experiment,
                                             start_ms=int(span[0] * 1000) if span else None)
    run = StepRun(run_id, tracking_uri, parent_run_id, experiment_id=experiment_id)
    spool = Path(spool_dir or Path(tempfile.gettempdir()) / "crnn-tracking") / f"{run_id}.jsonl"
    run.outbox = Outbox(run.send, spool, retry_seconds=_RETRY_SECONDS)
    started = time.monotonic()
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        if timed:  # to the hundredth: the UI shows every digit it gets
            run.log_metrics({"step_time_s": round(time.monotonic() - started, 2)})
        run.outbox.put(Batch(status=status, end_time=int((span[1] if span else time.time()) * 1000)))
        report = run.outbox.close(_flush_seconds())
        run.outbox = None
        _report_delays(run, report)


def log_step_records(folders: Sequence[Path], tracking: Tracking) -> list[str]:
    """Logs the ``STEP_RECORD`` of each of ``folders`` (outputs of recorded steps) as a child run of
    ``tracking``'s parent, with the step's own wall time; returns the steps logged."""
    tracking_uri, parent_run_id = tracking.resolved()
    if not tracking_uri:
        return []
    began = _client(tracking_uri).get_run(parent_run_id).info.start_time / 1000 if parent_run_id else None
    steps = []
    for folder in folders:
        path = Path(folder) / STEP_RECORD
        if not path.is_file():
            log.warning("%s: no step record; its step is not logged", folder)
            continue
        record = json.loads(path.read_text())
        cached = began is not None and record["finished_at"] < began
        span = (record["finished_at"] - record["step_time_s"], record["finished_at"])
        with step_run(record["step"], dataclasses.replace(tracking, parent_run_id=parent_run_id),
                      timed=False, span=span) as run:
            run.log_params(record["params"])
            run.log_metrics({**record["metrics"], "step_time_s": round(record["step_time_s"], 2)})
            run.set_tags({**record["tags"], CACHED_TAG: str(cached).lower(),
                          FINISHED_AT_TAG: _utc(record["finished_at"])})
        steps.append(record["step"])
    return steps


def _create_step_run(tracking_uri: str, parent_run_id: str | None, step: str, experiment: str,
                     start_ms: int | None = None) -> tuple[str, str]:
    """The step's run and its experiment's ids; a server that cannot be reached stops the step here, before it
    does any work."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        if parent_run_id:
            experiment_id = client.get_run(parent_run_id).info.experiment_id
            tags = {PARENT_TAG: parent_run_id, STEP_TAG: step}
        else:
            experiment_id, tags = ensure_experiment(tracking_uri, experiment), {STEP_TAG: step}
        start_ms = start_ms if start_ms is not None else int(time.time() * 1000)  # the tag's and the run's
        run = client.create_run(experiment_id, start_time=start_ms, run_name=step, tags=tags | _source_tags()
                                | {STARTED_AT_TAG: _utc(start_ms / 1000, milliseconds=True)})
        return run.info.run_id, experiment_id
    except MlflowException as error:
        if is_rejection(error):
            raise
        raise RuntimeError(f"tracking server {tracking_uri} unreachable when step {step} started: "
                           f"{str(error)[:300]}") from error


def _utc(seconds: float, milliseconds: bool = False) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds * 1000) % 1000:03d}Z" if milliseconds else f"{stamp}Z"


def _source_tags() -> dict[str, str]:
    """What ran, in MLflow's own tags: the run page's Source shows the name with the commit, when it is known."""
    commit = _commit()
    return {SOURCE_NAME_TAG: "crnn"} | ({} if commit == "unknown" else {GIT_COMMIT_TAG: commit})


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """Asked of git once a process (two subprocesses), not for every run a process makes."""
    from crnn.lineage import git_commit

    return git_commit()


def _report_delays(run: StepRun, report: OutboxReport) -> None:
    """Says on the run (when the server takes it) and in the log what an outage did to the step's tracking."""
    if not (report.delayed or report.unsent or report.rejected):
        return
    log.warning("tracking of run %s: %s", run.run_id, report.describe())
    if report.unsent:  # the server is still away: the spool holds the run's data, the log says where
        return
    tags = {"crnn.tracking.delayed_values": report.delayed, "crnn.tracking.outage_s": f"{report.outage_seconds:.1f}",
            "crnn.tracking.rejected_values": report.rejected}
    try:
        run.set_tags(tags)
    except Exception as error:  # noqa: BLE001 - the server is away: the log above is the report
        log.warning("could not record the delays on run %s: %s", run.run_id, error)


def _flush_seconds() -> float:
    """How long a step waits at its end for the tracking server to take its backlog."""
    return float(os.environ.get("CRNN_TRACKING_FLUSH_SECONDS", "120"))


def replay_spool(spool: Path, tracking_uri: str, run_id: str | None = None) -> int:
    """Sends a spooled backlog (``<run id>.jsonl``) to its run; returns how many values were sent."""
    run = StepRun(run_id or Path(spool).stem, tracking_uri)
    sent = 0
    for batch in read_spool(spool):
        run.send(batch)
        sent += batch.size()
    return sent
