"""``crnn pipeline submit`` against a loopback server implementing the KFP v2beta1 endpoints it calls.

This checks the requests the kfp client sends (upload, new version, experiment, run, polling, the token),
not a live Kubeflow Pipelines: none can run here.
"""

import json
import sys

import pytest
import yaml

from crnn.cli import main
from tests.kfp_api import API, FakeKfp, serve


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # the kfp client reads its context from ~/.config/kfp
    api = FakeKfp()
    server, url = serve(api)
    yield api, url
    server.shutdown()


def _calls(api: FakeKfp) -> list[str]:
    return [f"{r.method} {r.path.removeprefix(API)}" for r in api.requests]


def test_first_submit_uploads_then_a_second_adds_a_version_and_runs_wait(kfp_api, capsys):
    api, url = kfp_api
    args = ["pipeline", "submit", "--host", url, "--target", "ascend", "--experiment", "ocr", "--token", "s3cret",
            "--param", "steps=5000", "--param", "benchmarks=[\"IIIT5K/test_3000\"]", "--param",
            "tracking_uri=http://mlflow.kubeflow:5000", "--wait", "60"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "submitted run" in out and "SUCCEEDED" in out
    assert _calls(api)[:4] == ["GET /healthz", "GET /pipelines", "POST /pipelines/upload",
                               "GET /pipelines/" + next(iter(api.pipelines)) + "/versions"]
    assert "POST /experiments" in _calls(api) and "POST /runs" in _calls(api)
    assert all(r.headers.get("authorization") == "Bearer s3cret" for r in api.requests)

    pipeline_id = next(iter(api.pipelines))
    upload = next(r for r in api.requests if r.path.endswith("/pipelines/upload"))
    assert upload.query["name"] == ["crnn-training"]
    package = yaml.safe_load_all(api.uploaded(pipeline_id)[0].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0])
    spec = next(package)
    # The ascend pipeline, as compiled: its train task runs the AscendJob on the ascend image.
    job = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train-job"]["inputs"]["parameters"]
    assert job["target"]["runtimeValue"]["constant"] == "ascend"
    assert job["image"]["runtimeValue"]["constant"] == "crnn-pipeline/ascend:0.1.0"

    run = next(json.loads(r.body) for r in api.requests if r.path.endswith("/runs") and r.method == "POST")
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": api.pipelines[pipeline_id]["versions"][0][
            "pipeline_version_id"]}
    assert run["runtime_config"]["parameters"] == {"steps": 5000, "benchmarks": ["IIIT5K/test_3000"],
                                                   "tracking_uri": "http://mlflow.kubeflow:5000"}
    assert run["service_account"] == "crnn-pipeline"
    assert sum(r.path.startswith(API + "/runs/") for r in api.requests) == 2  # polled until it finished

    api.requests.clear()
    assert main(["pipeline", "submit", "--host", url, "--target", "gpu", "--experiment", "ocr",
                 "--version-name", "gpu-v2"]) == 0
    assert "POST /pipelines/upload_version" in _calls(api) and "POST /pipelines/upload" not in _calls(api)
    assert "POST /experiments" not in _calls(api)  # the experiment exists: reused
    assert [v["display_name"] for v in api.pipelines[pipeline_id]["versions"]] == ["crnn-training", "gpu-v2"]


def test_a_failed_run_fails_the_command(kfp_api, capsys):
    api, url = kfp_api
    api.final_state = "FAILED"
    assert main(["pipeline", "submit", "--host", url, "--wait", "60"]) == 2
    assert "ended FAILED" in capsys.readouterr().err


def test_bad_params_are_named(kfp_api, capsys):
    _, url = kfp_api
    assert main(["pipeline", "submit", "--host", url, "--param", "steps"]) == 2
    assert "--param expects KEY=VALUE, got 'steps'" in capsys.readouterr().err


def test_no_cache_uploads_a_version_with_caching_off(kfp_api):
    api, url = kfp_api
    assert main(["pipeline", "submit", "--host", url, "--target", "cpu", "--no-cache"]) == 0
    pipeline_id = next(iter(api.pipelines))
    spec = next(yaml.safe_load_all(api.uploaded(pipeline_id)[0].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]))
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert tasks["download"]["cachingOptions"] == tasks["convert"]["cachingOptions"] == {}


def _bearer(request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


def test_a_profile_user_submits_into_their_namespace(kfp_api):
    """Multi-user mode: the experiment and a newly uploaded pipeline in the user's namespace; a second submit
    finds that pipeline there (not among the shared ones) and adds a version."""
    api, url = kfp_api
    api.multi_user = True
    args = ["pipeline", "submit", "--host", url, "--namespace", "team-ocr", "--token", "t"]
    assert main(args) == 0
    [(pipeline_id, pipeline)] = api.pipelines.items()
    assert pipeline["namespace"] == "team-ocr"
    assert [e["namespace"] for e in api.experiments.values()] == ["team-ocr"]
    api.pipelines["shared"] = {"display_name": "crnn-training", "versions": [], "namespace": ""}
    assert main(args + ["--version-name", "v2"]) == 0
    assert len(pipeline["versions"]) == 2 and api.pipelines["shared"]["versions"] == []
    assert len(api.experiments) == 1  # found again in the namespace


def test_a_shared_pipeline_is_found_when_the_namespace_has_none(kfp_api):
    api, url = kfp_api
    api.multi_user = True
    api.pipelines["shared"] = {"display_name": "crnn-training", "versions": [], "namespace": ""}
    assert main(["pipeline", "submit", "--host", url, "--namespace", "team-ocr", "--version-name", "v9"]) == 0
    assert [v["display_name"] for v in api.pipelines["shared"]["versions"]] == ["v9"]


def test_a_long_wait_renews_the_token_before_it_expires(kfp_api, tmp_path):
    """--token-command is run again whenever its token is about to expire: each request carries a live one."""
    api, url = kfp_api
    api.polls_to_finish = 3
    script = tmp_path / "token.py"
    # A JWT (unsigned: only its exp claim is read) that expires in a minute, numbered by a counter file.
    script.write_text(
        "import base64, json, pathlib, time\n"
        f"counter = pathlib.Path({str(tmp_path / 'n')!r})\n"
        "n = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(n))\n"
        "claims = base64.urlsafe_b64encode(json.dumps({'exp': time.time() + 60, 'n': n}).encode()).decode()\n"
        "print(f'h.{claims.rstrip(\"=\")}.s')\n")
    command = f"{sys.executable} {script}"
    assert main(["pipeline", "submit", "--host", url, "--token-command", command, "--wait", "60"]) == 0
    tokens = [_bearer(r) for r in api.requests]
    assert all(tokens) and len(set(tokens)) == len(tokens)  # renewed before every request: a minute is too short


def test_a_token_command_that_fails_is_named(kfp_api, capsys):
    _, url = kfp_api
    assert main(["pipeline", "submit", "--host", url, "--token-command", "false"]) == 2
    assert "--token-command 'false' gave no token" in capsys.readouterr().err


def test_in_a_pod_the_projected_token_is_read_again_on_every_request(tmp_path, monkeypatch):
    from kfp_server_api import Configuration

    from pipelines.kfp_login import login

    token = tmp_path / "token"
    token.write_text("first\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    credentials = login()["credentials"]
    config = Configuration()
    credentials.refresh_api_key_hook(config)
    token.write_text("rotated\n")  # the kubelet renews it
    assert config.api_key["authorization"] == "first"
    credentials.refresh_api_key_hook(config)
    assert config.api_key["authorization"] == "rotated"
    assert login(token="fixed") == {"existing_token": "fixed"}
