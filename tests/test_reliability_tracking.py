"""The tracking server and registry under concurrency and faults: two pipelines registering at once, the
server unreachable when a step starts."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from crnn.registry.lock import registry_lock
from crnn.tracking import Tracking, step_run
from tests.mlflow_server import free_port

pytestmark = pytest.mark.reliability


def _run_pipeline(out, url: str, model: str, steps: int) -> subprocess.Popen:
    script = ("import json, sys; from pipelines.local_run import run_locally; "
              "s = run_locally(sys.argv[1], tracking_uri=sys.argv[2], preset='tiny', steps=int(sys.argv[4]), "
              "train_size=64, val_size=8, test_size=10, model_name=sys.argv[3], min_average=0.0, "
              "max_drop_points=100.0); json.dump(s, open(sys.argv[1] + '/summary.json', 'w'))")
    out.mkdir()
    log = open(out / "run.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-c", script, str(out), url, model, str(steps)], stdout=log,
                            stderr=subprocess.STDOUT)


def _gate_chain(client: MlflowClient, model: str) -> list[str]:
    """The promoted versions in the order the gate promoted them, each compared with the one before; fails if
    two decisions read the same champion and both promoted (a lost update)."""
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name = '{model}'")}
    promoted = {v: t for v, t in versions.items() if t["gate.decision"] == "promoted"}
    chain = [v for v, t in promoted.items() if "gate.champion_version" not in t]
    assert len(chain) == 1, f"more than one version decided with no champion: {chain}"
    while successors := [v for v, t in promoted.items() if t.get("gate.champion_version") == chain[-1]]:
        assert len(successors) == 1, f"versions {successors} both replaced champion {chain[-1]}"
        chain.append(successors[0])
    assert set(chain) == set(promoted)
    return chain


def test_two_pipelines_at_once_register_both_and_the_aliases_follow_the_gate(mlflow_server, tmp_path,
                                                                            reliability):
    model = "crnn-concurrent"
    runs = [_run_pipeline(tmp_path / name, mlflow_server.url, model, steps) for name, steps in
            (("a", 6), ("b", 8))]
    for run, name in zip(runs, "ab", strict=True):
        assert run.wait(timeout=900) == 0, (tmp_path / name / "run.log").read_text()[-4000:]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in "ab"]
    client = MlflowClient(mlflow_server.url)
    registered = sorted(s["model_version"] for s in summaries)
    assert registered == ["1", "2"], "each pipeline run registered its own version"
    chain = _gate_chain(client, model)
    champion = str(client.get_model_version_by_alias(model, "champion").version)
    candidate = str(client.get_model_version_by_alias(model, "candidate").version)
    assert champion == chain[-1] and candidate in registered
    assert not client.search_registered_models(f"name = '{model}.gate-lock'"), "the lock was released"
    reliability("tracking", "two pipeline runs finishing at the same time against one MLflow server and registry",
                f"versions {', '.join(registered)} registered; gate decisions serialised (promotion chain "
                f"{' -> '.join(chain)}); champion is version {champion}, the last promoted")


def test_the_registry_lock_excludes_and_breaks_when_stale(sqlite_tracking):
    client = MlflowClient(sqlite_tracking)
    inside, overlaps = [], []

    def decide(i: int) -> None:
        with registry_lock(client, "m", poll_seconds=0.01):
            inside.append(i)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1, 1]

    client.create_registered_model("m.gate-lock")  # left by a process that died
    started = time.monotonic()
    with registry_lock(client, "m", stale_seconds=0.2, poll_seconds=0.05):
        assert time.monotonic() - started >= 0.2  # silent for 0.2 s as the waiter saw it
    with pytest.raises(TimeoutError, match="m.gate-lock still held"):
        client.create_registered_model("m.gate-lock")
        with registry_lock(client, "m", timeout_seconds=0.2, stale_seconds=60, poll_seconds=0.05):
            pass
    client.delete_registered_model("m.gate-lock")


def test_a_slow_holder_keeps_the_registry_lock_and_releases_only_its_own(sqlite_tracking):
    """A holder that takes longer than the staleness (a tracking server answering late) renews its lock, so a
    waiter does not break it; one whose lock was broken while it was silent learns so before moving an alias,
    and leaves the new holder's lock in place."""
    from crnn.registry.lock import LockLost

    client = MlflowClient(sqlite_tracking)
    order = []

    def waiter() -> None:
        with registry_lock(client, "slow", stale_seconds=0.2, poll_seconds=0.02):
            order.append("waiter in")

    with registry_lock(client, "slow", stale_seconds=0.2) as held:
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(1.0)  # five times the staleness, renewing every 0.05 s
        held.check()
        order.append("holder out")
    thread.join()
    assert order == ["holder out", "waiter in"]

    with registry_lock(client, "lost", stale_seconds=60) as held:
        client.delete_registered_model("lost.gate-lock")  # broken by a waiter that found it silent...
        client.create_registered_model("lost.gate-lock", tags={"holder": "another:1:x"})  # ...and taken
        with pytest.raises(LockLost, match="lost.gate-lock was broken while this process"):
            held.check()
    assert client.get_registered_model("lost.gate-lock").tags["holder"] == "another:1:x"


def test_the_lock_renews_through_a_passing_tracking_error(sqlite_tracking):
    """A read that fails once (a tracking server briefly down) is retried: the holder keeps renewing."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    class FlakyOnce:
        def __init__(self, client):
            self._client, self.fail = client, False

        def __getattr__(self, name):
            return getattr(self._client, name)

        def get_registered_model(self, name):
            if self.fail:
                self.fail = False
                raise MlflowException("the tracking server is unavailable", error_code=TEMPORARILY_UNAVAILABLE)
            return self._client.get_registered_model(name)

    client = FlakyOnce(MlflowClient(sqlite_tracking))
    with registry_lock(client, "flaky", stale_seconds=0.2) as held:
        time.sleep(0.2)
        client.fail = True
        time.sleep(0.1)
        assert not client.fail  # the beat met the error
        beat = int(client.get_registered_model("flaky.gate-lock").tags["beat"])
        time.sleep(0.3)
        assert int(client.get_registered_model("flaky.gate-lock").tags["beat"]) > beat
        held.check()
    assert not client.search_registered_models("name = 'flaky.gate-lock'")


def test_a_step_started_without_its_tracking_server_fails_at_once_and_clearly(tmp_path, reliability, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with (pytest.raises(RuntimeError, match=f"tracking server {url} unreachable when step convert started"),
          step_run("convert", Tracking(url))):
        (tmp_path / "work").write_text("must not happen")
    assert not (tmp_path / "work").exists()
    reliability("tracking", "the MLflow server down when a step starts",
                f"the step stopped before any work with a clear error after {time.monotonic() - started:.1f} s "
                "(MLflow's HTTP retries first); KFP's task retry or a rerun starts it again")


def test_a_slow_tracking_server_delays_the_metrics_but_not_training(converted_dir, tmp_path, reliability):
    import re

    from tests.fault_proxy import FaultProxy
    from tests.mlflow_server import MlflowServer
    from tests.test_cli import CRNN

    server = MlflowServer(tmp_path / "server").start()
    proxy = FaultProxy(server.url).start()  # answers held back while delay_s is set
    steps, log_file = 200, tmp_path / "train.log"
    env = os.environ | {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                        "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["train", "--train", converted_dir / "mjsynth" / "train", "--out", tmp_path / "run", "--preset", "tiny",
            "--steps", steps, "--log-every", 1, "--checkpoint-every", 1000, "--tracking-uri", proxy.url]

    def logged() -> int:
        found = re.findall(r"step (\d+)/", log_file.read_text())
        return int(found[-1]) if found else 0

    try:
        with open(log_file, "w") as log:
            proc = subprocess.Popen([*CRNN, *map(str, args)], stdout=log, stderr=subprocess.STDOUT, env=env)
            _wait_for(lambda: logged() >= 10, proc, log_file)
            proxy.delay_s = 4.0  # every answer now comes after the client's 2 s timeout
            slow_from = logged()
            _wait_for(lambda: logged() >= slow_from + 40, proc, log_file)
            slow_until = logged()
            proxy.delay_s = 0.0
            assert proc.wait(timeout=600) == 0, log_file.read_text()[-3000:]
        client = MlflowClient(server.url)
        run = client.search_runs([client.get_experiment_by_name("crnn").experiment_id])[0]
        points = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    finally:
        proxy.stop()
        server.stop()
    assert sorted(set(points)) == list(range(1, steps + 1)) and run.info.status == "FINISHED"
    assert int(run.data.tags["crnn.tracking.delayed_values"]) > 0
    # A request that timed out may still have reached the server: the retry repeats its points, identical.
    repeated = len(points) - len(set(points))
    reliability("tracking", "the MLflow server answering after the client's 2 s timeout (a slow proxy) for "
                f"{slow_until - slow_from} training steps",
                f"training went on; {run.data.tags['crnn.tracking.delayed_values']} values delayed and sent when it "
                f"answered again; all {steps} loss points present ({repeated} repeated identically by retries of "
                "requests that had arrived after all); run FINISHED")


def _wait_for(condition, proc: subprocess.Popen, log_file, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
