"""Security: the tracking server of the manifests demands a login and stays inside the cluster, and no
credential leaks into anything the pipeline writes."""

import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.mlflow_server import MlflowServer
from tools.validate_manifests import OVERLAYS_DIR, render

pytestmark = [pytest.mark.reliability,
              pytest.mark.skipif(not shutil.which("kubectl"), reason="renders the manifests with kubectl")]
ALLOWED_HOST = "mlflow.kubeflow.svc.cluster.local:5000"  # a name the manifests' --allowed-hosts lists


def _mlflow_deployment() -> tuple[dict, dict]:
    objects = render(OVERLAYS_DIR / "gpu")
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "mlflow-server")
    return deployment, config["data"]


def test_the_tracking_server_of_the_manifests_demands_a_login(tmp_path, reliability):
    deployment, config = _mlflow_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # The server's own flags, as deployed, but for where it listens and stores.
    flags = [a.replace("$(ALLOWED_HOSTS)", config["allowed-hosts"]) for a in container["args"]
             if not a.startswith(("--host", "--port", "--workers", "--artifacts-destination"))]
    assert "--app-name=basic-auth" in flags
    (tmp_path / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-test-password", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32}
    server = MlflowServer(tmp_path / "server", extra_args=tuple(flags), env=env).start()
    try:
        url = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        anonymous = requests.get(url, headers={"Host": ALLOWED_HOST}, timeout=30)
        wrong = requests.get(url, headers={"Host": ALLOWED_HOST}, auth=("admin", "guess"), timeout=30)
        admin = requests.get(url, headers={"Host": ALLOWED_HOST}, auth=("admin", "a-long-test-password"),
                             timeout=30)
        foreign = requests.get(url, headers={"Host": "evil.example.com"}, auth=("admin", "a-long-test-password"),
                               timeout=30)
    finally:
        server.stop()
    assert (anonymous.status_code, wrong.status_code, admin.status_code) == (401, 401, 200)
    assert foreign.status_code == 403
    reliability("security", "requests to the tracking server as deployed, without and with a login, and with "
                "a foreign Host header",
                f"no login: {anonymous.status_code}, wrong password: {wrong.status_code}, admin: "
                f"{admin.status_code}, foreign host: {foreign.status_code}")


def test_the_tracking_server_is_not_exposed_outside_the_cluster(reliability):
    for overlay in ("local", "gpu", "ascend"):
        objects = render(OVERLAYS_DIR / overlay)
        services = [o for o in objects if o["kind"] == "Service"]
        assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services), overlay
        assert not [o for o in objects if o["kind"] in ("Ingress", "Route", "Gateway")], overlay
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        guarded = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get(
            "app.kubernetes.io/name") == "mlflow"]
        assert guarded and all(rule["from"] == [{"podSelector": {}}] for rule in guarded[0]["spec"]["ingress"])
    reliability("security", "an outside client reaching for the tracking server",
                f"{len(services)} Services, all ClusterIP, no Ingress; NetworkPolicy {guarded[0]['metadata']['name']} "
                "admits pods of its own namespace only (every overlay)")


def test_no_credential_appears_in_anything_the_pipeline_wrote(tracked_pipeline, reliability):
    from tests.conftest import FAKE_CREDENTIALS

    server, out, _ = tracked_pipeline
    places = [server.root, out, Path(__file__).parent.parent / "pipelines" / "compiled"]
    scanned, found = 0, []
    for place in places:
        for path in place.rglob("*"):
            if path.is_file():
                scanned += 1
                data = path.read_bytes()
                found += [(path, name) for name, value in FAKE_CREDENTIALS.items() if value.encode() in data]
    assert scanned > 100 and not found, found
    log = out / "pipeline.log"
    assert log.stat().st_size > 10_000 and not any(v in log.read_text() for v in FAKE_CREDENTIALS.values())
    reliability("security", f"a pipeline run with {len(FAKE_CREDENTIALS)} credentials in its environment "
                "(AWS keys, MLflow password, KFP token)",
                f"none found in {scanned} files written (MLflow store and artifacts, pipeline outputs, compiled "
                f"YAML) nor in the {log.stat().st_size // 1024} KiB run log")


def test_redaction_keeps_credentials_in_urls_out_of_params():
    from crnn.data.fetch import redact

    assert "s3cr3t" not in redact("https://user:s3cr3t@mirror.example.com/datasets")
    assert re.search(r"mirror\.example\.com", redact("https://user:s3cr3t@mirror.example.com/datasets"))
