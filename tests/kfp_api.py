"""A loopback HTTP server answering the few KFP v2beta1 REST endpoints that ``crnn pipeline submit`` calls,
recording every request. It checks the requests the kfp client sends, not the behaviour of a live KFP."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from tests.loopback_api import Request, serve  # noqa: F401 - serve: the tests start FakeKfp with it

API = "/apis/v2beta1"


@dataclass
class FakeKfp:
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)  # id -> {"display_name", "versions": [...]}
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    final_state: str = "SUCCEEDED"
    # Multi-user mode, as kubeflow/pipelines' API server has it: an experiment needs a namespace, and listing
    # pipelines with a namespace finds that namespace's, without one the shared ones.
    multi_user: bool = False
    polls_to_finish: int = 2

    def handle(self, request: Request) -> tuple[int, dict]:
        self.requests.append(request)
        route = request.method, request.path.removeprefix(API)
        if route == ("GET", "/healthz"):
            return 200, {"multi_user": self.multi_user}
        if route == ("GET", "/pipelines"):
            wanted, namespace = _filter_value(request.query), request.query.get("namespace", [""])[0]
            found = [self._pipeline(pid) for pid, p in self.pipelines.items()
                     if p["display_name"] == wanted and p["namespace"] == namespace]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if route == ("POST", "/pipelines/upload"):
            pipeline_id = _new_id()
            self.pipelines[pipeline_id] = {"display_name": request.query["name"][0], "versions": [],
                                           "namespace": request.query.get("namespace", [""])[0]}
            self._add_version(pipeline_id, request.query["name"][0], request.body)
            return 200, self._pipeline(pipeline_id)
        if route == ("POST", "/pipelines/upload_version"):
            pipeline_id = request.query["pipelineid"][0]
            return 200, self._add_version(pipeline_id, request.query["name"][0], request.body)
        if request.method == "GET" and request.path.endswith("/versions"):
            pipeline_id = request.path.removeprefix(API + "/pipelines/").split("/")[0]
            versions = self.pipelines[pipeline_id]["versions"]
            return 200, {"pipeline_versions": [_public(v) for v in reversed(versions)], "total_size": len(versions)}
        if route == ("GET", "/experiments"):
            wanted, namespace = _filter_value(request.query), request.query.get("namespace", [""])[0]
            found = [e for e in self.experiments.values()
                     if e["display_name"] == wanted and e.get("namespace", "") == namespace]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if route == ("POST", "/experiments"):
            experiment = json.loads(request.body) | {"experiment_id": _new_id()}
            if self.multi_user and not experiment.get("namespace"):
                return 400, {"error": "Invalid input error: In multi-user mode, experiment namespace is required"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if route == ("POST", "/runs"):
            run = json.loads(request.body) | {"run_id": _new_id(), "state": "PENDING", "polls": 0}
            self.runs[run["run_id"]] = run
            return 200, _public(run)
        if request.method == "GET" and request.path.startswith(API + "/runs/"):
            run = self.runs[request.path.rsplit("/", 1)[1]]
            run["polls"] += 1
            run["state"] = "RUNNING" if run["polls"] < self.polls_to_finish else self.final_state
            return 200, _public(run)
        return 404, {"error": f"no route {request.method} {request.path}"}

    def _add_version(self, pipeline_id: str, name: str, body: bytes) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": _new_id(), "display_name": name,
                   "package": body}
        self.pipelines[pipeline_id]["versions"].append(version)
        return _public(version)

    def _pipeline(self, pipeline_id: str) -> dict:
        return {"pipeline_id": pipeline_id, "display_name": self.pipelines[pipeline_id]["display_name"]}

    def uploaded(self, pipeline_id: str) -> list[bytes]:
        return [v["package"] for v in self.pipelines[pipeline_id]["versions"]]


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("polls", "package")}


def _filter_value(query: dict[str, list[str]]) -> str | None:
    predicates = json.loads(query.get("filter", ["{}"])[0]).get("predicates", [])
    return predicates[0].get("stringValue", predicates[0].get("string_value")) if predicates else None


def _new_id() -> str:
    return uuid.uuid4().hex[:12]
