"""The tracking server goes away in the middle of training and comes back: training goes on, nothing is lost."""

import os
import re
import subprocess
import time

import pytest

from tests.mlflow_server import MlflowServer
from tests.test_cli import CRNN

STEPS = 1500  # a tiny step takes milliseconds: enough of them that training outlasts stopping the server
# MLflow's own retries are kept short so that the outbox's retries are what carries the data through.
FAST_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _steps_logged(log_file) -> int:
    found = re.findall(r"step (\d+)/", log_file.read_text())
    return int(found[-1]) if found else 0


def _wait(condition, what: str, proc: subprocess.Popen, log_file, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended while waiting for {what}:\n{log_file.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)



@pytest.mark.reliability
def test_training_survives_a_tracking_outage_and_sends_what_it_held(converted_dir, tmp_path, reliability):
    server = MlflowServer(tmp_path / "server").start()
    log_file = tmp_path / "train.log"
    args = ["train", "--train", converted_dir / "mjsynth" / "train", "--out", tmp_path / "run", "--preset", "tiny",
            "--steps", STEPS, "--log-every", 1, "--checkpoint-every", 1000, "--tracking-uri", server.url]
    try:
        with open(log_file, "w") as log:
            proc = subprocess.Popen([*CRNN, *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                                    env=os.environ | FAST_RETRIES)
            _wait(lambda: _steps_logged(log_file) >= 10, "the first steps", proc, log_file)
            server.stop()
            stopped_at = _steps_logged(log_file)
            assert stopped_at + 40 <= STEPS, f"training reached step {stopped_at} before the server stopped"
            _wait(lambda: _steps_logged(log_file) >= stopped_at + 40, "training during the outage", proc, log_file)
            server.start()
            assert proc.wait(timeout=600) == 0, log_file.read_text()[-3000:]
    finally:
        server.stop()
    output = log_file.read_text()
    assert "tracking server unreachable, holding run data" in output
    assert re.search(r"\d+ of them delayed by \d+ s without the tracking server", output)

    server.start()
    try:

        runs = _runs(server)
        train = next(r for r in runs if r["info"]["run_name"] == "train")
        history = server.api("metrics/get-history", run_id=train["info"]["run_id"], metric_key="loss")
        assert sorted(int(m.get("step", 0)) for m in history["metrics"]) == list(range(1, STEPS + 1))
        assert train["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in train["data"]["tags"]}
        assert int(tags["crnn.tracking.delayed_values"]) > 0 and float(tags["crnn.tracking.outage_s"]) > 0
        reliability("tracking", f"the MLflow server stopped after step {stopped_at} of {STEPS} and started again",
                    f"training went on ({_steps_logged(log_file) - stopped_at} more steps); "
                    f"{tags['crnn.tracking.delayed_values']} values held for "
                    f"{float(tags['crnn.tracking.outage_s']):.0f} s and sent on its return; "
                    f"all {len(history['metrics'])} loss points present; run FINISHED")
    finally:
        server.stop()


def _runs(server: MlflowServer) -> list[dict]:
    import requests

    experiments = server.api("experiments/search", max_results=100)["experiments"]
    response = requests.post(f"{server.url}/api/2.0/mlflow/runs/search",
                             json={"experiment_ids": [e["experiment_id"] for e in experiments]}, timeout=30)
    response.raise_for_status()
    return response.json()["runs"]
