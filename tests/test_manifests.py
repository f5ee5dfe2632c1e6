"""The cluster manifests: every overlay renders (real kubectl kustomize) and passes tools/validate_manifests.py
(real kubernetes-validate schemas, the CRDs under manifests/crds, the pod policy), and each check fails when a
temporary overlay on top of the real ones breaks what it guards."""

from __future__ import annotations

import base64
import copy
import os
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tools import validate_manifests as vm

STANDALONE = ("local", "gpu", "ascend")  # beside a standalone KFP, everything in `kubeflow`
MULTI_USER = ("multi-user-mlflow", "multi-user-profile")  # a multi-user Kubeflow
OVERLAYS = STANDALONE + MULTI_USER
NAMESPACE = "kubeflow"
PROFILE = "kubeflow-user-example-com"  # the multi-user-profile overlay's namespace (kubeflow/manifests' example)
MLFLOW_NAMESPACE = "crnn-mlflow"
NAMESPACES = {"multi-user-mlflow": MLFLOW_NAMESPACE, "multi-user-profile": PROFILE}

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl is not installed: install it to render manifests/")


@pytest.fixture(scope="module")
def crds() -> vm.CrdSchemas:
    return vm.load_crd_schemas()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: install it to render manifests/")
    return {name: vm.render(vm.OVERLAYS_DIR / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def examples() -> dict[str, list[dict]]:
    """The objects of the examples kept beside each overlay but left out of it (read, not rendered: no kubectl)."""
    return {name: [obj for path in vm.examples(vm.OVERLAYS_DIR / name) for obj in vm.read_example(path)]
            for name in OVERLAYS}


def _find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def _overlay(tmp_path: Path, on: str, extra: dict, files: dict[str, str] | None = None, name: str = "bad") -> Path:
    """A temporary overlay named ``name`` on top of the real overlay ``on``; returns its folder."""
    folder = tmp_path / name
    folder.mkdir()
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    kustomization = {"resources": [os.path.relpath(vm.OVERLAYS_DIR / on, folder), *(files or {})], **extra}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def _json_patch(kind: str, name: str, *ops: tuple | dict) -> dict:
    """Kustomize JSON-patch ops on one object; ("remove", path) and ("replace"|"add", path, value) are short."""
    ops_ = [op if isinstance(op, dict) else dict(zip(("op", "path", "value"), op, strict=False)) for op in ops]
    return {"patches": [{"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(ops_)}]}


def _problems(folder: Path, crds: vm.CrdSchemas) -> list[str]:
    return [message for report in vm.validate_overlay(folder, crds) for message in report.messages()]


# --- the repository's overlays -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_renders_and_validates(rendered, crds, name):
    reports = vm.validate_objects(rendered[name], name, crds, literal_secrets_allowed=name == "local")
    assert [m for r in reports for m in r.messages()] == []
    kinds = {r.kind for r in reports}
    tracking = {"Deployment", "Service", "NetworkPolicy"}
    pipeline = {"PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Job"}
    assert {"multi-user-mlflow": tracking, "multi-user-profile": pipeline}.get(name, tracking | pipeline) <= kinds
    namespaced = [o for o in rendered[name] if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {NAMESPACES.get(name, NAMESPACE)}


@needs_kubectl
def test_main_checks_every_overlay_and_passes(capsys):
    assert vm.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0].split()[-1].split("/")[0] for line in out if line.startswith("ok")} == set(OVERLAYS)
    assert "ok    ascend/ascendjob.yaml: AscendJob/crnn-train-npu" in out  # the example beside the overlay
    assert out[-1].startswith(f"{len(out) - 1} objects, 0 failed")


def test_kubernetes_version_is_the_newest_kubernetes_validate_knows():
    assert kubernetes_validate.latest_version() == vm.KUBERNETES_VERSION


def test_crds_are_valid_crds_and_close_their_objects(crds):
    schema = crds[("kubeflow.org/v1", "TFJob")]
    assert schema["properties"]["spec"]["additionalProperties"] is False
    replicas = schema["properties"]["spec"]["properties"]["tfReplicaSpecs"]
    assert set(replicas["properties"]) == {"Chief", "Worker", "PS", "Evaluator"}
    assert replicas["additionalProperties"] is False
    assert "additionalProperties" not in replicas["properties"]["Worker"]["properties"]["template"]  # preserved
    schema = crds[("mindxdl.gitee.com/v1", "AscendJob")]
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False and "suspend" not in spec["properties"]["runPolicy"]["properties"]
    replicas = spec["properties"]["replicaSpecs"]
    assert set(replicas["properties"]) == {"Chief", "Worker", "Master", "Scheduler"}  # any other fails the operator
    assert replicas["additionalProperties"] is False
    assert replicas["properties"]["Chief"]["properties"]["replicas"]["maximum"] == 20000
    assert "additionalProperties" not in replicas["properties"]["Chief"]["properties"]["template"]  # preserved


def test_openapi_conversion_keeps_int_or_string_nullable_and_preserved_objects_open():
    schema = vm.openapi_to_jsonschema({
        "type": "object",
        "properties": {"port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                       "note": {"type": "string", "nullable": True},
                       "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {"a": {"type": "string"}}},
                       "map": {"type": "object", "additionalProperties": {"type": "object",
                                                                          "properties": {"b": {"type": "integer"}}}}}})
    assert schema["additionalProperties"] is False
    assert "type" not in schema["properties"]["port"]
    assert schema["properties"]["note"]["type"] == ["string", "null"]
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["map"]["additionalProperties"]["additionalProperties"] is False


def test_rbac_grants_exactly_what_kfp_tasks_and_the_training_component_need(rendered):
    for name, objects in rendered.items():
        if name == "multi-user-mlflow":
            continue  # the tracking server's namespace runs no pipeline
        rules = _find(objects, "Role", "crnn-pipeline")["rules"]
        granted = {(group, resource, verb, tuple(rule.get("resourceNames", ()))) for rule in rules
                   for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
        job_verbs = {"create", "get", "list", "watch", "delete", "patch"}  # patch: adoption
        assert granted == {("kubeflow.org", "tfjobs", v, ()) for v in job_verbs} \
            | {("mindxdl.gitee.com", "ascendjobs", v, ()) for v in job_verbs} \
            | {("", "pods", v, ()) for v in ("get", "list", "watch")} | {("", "pods/log", "get", ())} \
            | {("", "events", v, ()) for v in ("list", "watch")} \
            | {("", "configmaps", v, ()) for v in ("get", "list", "watch")} \
            | {("", "secrets", "get", ("mlpipeline-minio-artifact",))} \
            | {("argoproj.io", "workflowtaskresults", v, ()) for v in ("create", "patch")}
        # KFP's driver and launcher read the artifact store's Secret: that one only, by name.
        assert all(set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"} for rule in rules)
        binding = _find(objects, "RoleBinding", "crnn-pipeline")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "crnn-pipeline"}
        namespace = NAMESPACES.get(name, NAMESPACE)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "crnn-pipeline", "namespace": namespace}]
        assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_a_profile_gets_the_volume_and_its_runs_service_account_the_rights(rendered):
    """Runs from the Kubeflow UI execute as the profile's default-editor: it is bound to the same Role."""
    objects = rendered["multi-user-profile"]
    binding = _find(objects, "RoleBinding", "crnn-pipeline-default-editor")
    assert binding["roleRef"]["name"] == "crnn-pipeline"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": PROFILE}]
    assert not [o for o in objects if o["kind"] in ("Deployment", "Service")]  # the server is elsewhere
    init = _find(objects, "Job", "crnn-datasets-init")["spec"]["template"]["spec"]
    assert init["securityContext"]["fsGroup"] == init["securityContext"]["runAsUser"] == 1000  # the pods' uid


def test_the_tracking_server_admits_profile_namespaces_and_stays_out_of_the_mesh(rendered):
    objects = rendered["multi-user-mlflow"]
    assert _find(objects, "Namespace", MLFLOW_NAMESPACE)["metadata"].get("labels", {}).get("istio-injection") is None
    template = _find(objects, "Deployment", "mlflow")["spec"]["template"]["metadata"]
    assert template["labels"]["sidecar.istio.io/inject"] == template["annotations"]["sidecar.istio.io/inject"] \
        == "false"
    (rule,) = _find(objects, "NetworkPolicy", "mlflow-ingress")["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {}},
                            {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}}]
    hosts = _find(objects, "ConfigMap", "mlflow-server")["data"]["allowed-hosts"].split(",")
    assert f"mlflow.{MLFLOW_NAMESPACE}.svc.cluster.local:5000" in hosts and not [h for h in hosts if NAMESPACE in h]


def test_mlflow_server_settings(rendered):
    objects = rendered["gpu"]
    pod = _find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (init,), (server,) = pod["initContainers"], pod["containers"]
    assert init["command"][:3] == ["mlflow", "db", "upgrade"]
    assert server["command"] == ["mlflow", "server"]
    assert {"--app-name=basic-auth", "--allowed-hosts=$(ALLOWED_HOSTS)", "--port=5000"} <= set(server["args"])
    assert server["livenessProbe"]["httpGet"]["path"] == server["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("valueFrom", {}) for e in server["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "crnn-s3"
    hosts = _find(objects, "ConfigMap", "mlflow-server")["data"]["allowed-hosts"].split(",")
    names = ["mlflow", f"mlflow.{NAMESPACE}", f"mlflow.{NAMESPACE}.svc", f"mlflow.{NAMESPACE}.svc.cluster.local"]
    assert set(hosts) == {*names, *(f"{n}:5000" for n in names), "localhost:5000"}
    assert _find(objects, "Service", "mlflow")["spec"]["ports"][0]["port"] == 5000


def test_datasets_volume_is_shared_on_real_clusters_and_names_its_class(rendered):
    for name in ("gpu", "ascend", "multi-user-profile"):
        spec = _find(rendered[name], "PersistentVolumeClaim", "crnn-datasets")["spec"]
        assert spec["accessModes"] == ["ReadWriteMany"] and spec["storageClassName"]


def test_only_the_local_overlay_has_secrets_and_they_are_labelled_throwaway(rendered):
    assert not [o for name in OVERLAYS if name != "local" for o in rendered[name] if o["kind"] == "Secret"]
    secrets = {o["metadata"]["name"]: o for o in rendered["local"] if o["kind"] == "Secret"}
    assert {"mlflow-db", "crnn-s3", "mlflow-auth", "mlflow-client"} <= set(secrets)
    for secret in secrets.values():
        assert secret["metadata"]["labels"]["crnn-pipeline/local-only"] == "true"
        for key, value in secret["data"].items():
            if any(word in key.lower() for word in ("password", "secret", "uri", ".ini")):
                assert "local-only" in base64.b64decode(value).decode(), f"{secret['metadata']['name']}.{key}"


@pytest.mark.parametrize("name", ["gpu", "ascend"])
def test_accelerator_overlays_match_the_pipelines_targets(rendered, examples, name):
    from crnn.cluster.targets import TARGETS, image

    target = TARGETS[name]
    data = _find(rendered[name], "ConfigMap", "crnn-target")["data"]
    assert data["accelerator-resource"] == target.accelerator
    assert int(data["devices-per-worker"]) == target.devices_per_node
    assert data["image"] == image(target.image)
    assert yaml.safe_load(data["node-selector"]).items() >= target.node_selector.items()
    assert {t["key"] for t in yaml.safe_load(data["tolerations"])} == {t.key for t in target.tolerations}
    (job,) = [o for o in rendered[name] + examples[name] if o["kind"] in vm.REQUIRED_CONTAINER]
    replicas = next(job["spec"][key] for key in vm.REPLICA_SPEC_FIELDS if key in job["spec"])
    assert sum(replica["replicas"] for replica in replicas.values()) == int(data["workers"]) == 2  # servers
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == vm.REQUIRED_CONTAINER[job["kind"]] and container["image"] == data["image"]
        assert container["resources"]["limits"][target.accelerator] == target.devices_per_node
        assert f"--device={target.device}" in container["args"]
        assert pod.get("nodeSelector", {}) == yaml.safe_load(data["node-selector"])
    # Applying the overlay starts no training: the TFJob is suspended, the AscendJob (no suspend) left out.
    assert job in examples[name] or job["spec"]["runPolicy"]["suspend"] is True


def test_the_ascend_overlay_leaves_out_its_example_ascendjob(rendered, examples):
    folder = vm.OVERLAYS_DIR / "ascend"
    assert vm.examples(folder) == [folder / "ascendjob.yaml"]
    assert not [o for o in rendered["ascend"] if o["kind"] in vm.REQUIRED_CONTAINER]  # nothing starts on apply
    assert not [name for name in OVERLAYS if name != "ascend" and vm.examples(vm.OVERLAYS_DIR / name)]


def test_the_example_ascendjob_is_one_the_ascend_operator_accepts(crds, examples):
    """Two servers as a tensorflow AscendJob: Chief and Worker, container `ascend`, the chief's port, the NPUs
    from the device plugin's annotation, the host's driver read-only, and no rank table or hccn.conf."""
    job = _find(examples["ascend"], "AscendJob", "crnn-train-npu")
    assert vm.check_object(job, crds) == []
    assert job["metadata"]["labels"]["framework"] == "tensorflow"
    assert job["metadata"]["labels"]["ring-controller.atlas"] == "ascend-910"
    spec = job["spec"]
    assert spec["schedulerName"] == "volcano" and spec["successPolicy"] == "AllWorkers"
    assert spec["runPolicy"]["schedulingPolicy"] == {"minAvailable": 2, "queue": "default"}
    assert {role: r["replicas"] for role, r in spec["replicaSpecs"].items()} == {"Chief": 1, "Worker": 1}
    for replica in spec["replicaSpecs"].values():
        pod = replica["template"]["spec"]
        assert pod["activeDeadlineSeconds"] == spec["runPolicy"]["activeDeadlineSeconds"]  # the operator's is unused
        (container,) = pod["containers"]
        assert container["name"] == "ascend" and container["args"][:1] == ["launch-npu"]
        assert not [a for a in container["args"] if a.startswith("--rank-table")]  # the CM_* variables instead
        assert container["ports"] == [{"name": "ascendjob-port", "containerPort": 2222}]
        env = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
        assert env["ASCEND_VISIBLE_DEVICES"]["fieldRef"]["fieldPath"] == "metadata.annotations['huawei.com/Ascend910']"
        assert env["XDL_IP"]["fieldRef"]["fieldPath"] == "status.hostIP"
        host_paths = {v["hostPath"]["path"]: v["name"] for v in pod["volumes"] if "hostPath" in v}
        assert set(host_paths) == {"/usr/local/Ascend/driver"}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["ascend-driver"]["readOnly"] is True


@pytest.mark.parametrize("name", ["gpu", "ascend"])
def test_the_training_components_tfjob_passes_the_same_checks(crds, name):
    from crnn.cluster.commands import TrainSpec
    from crnn.cluster.targets import TARGETS, image
    from crnn.cluster.tfjob import tfjob_manifest

    target = TARGETS[name]
    spec = TrainSpec(train_dirs=("/mnt/datasets/converted/mjsynth/train",), out_dir="/mnt/datasets/runs/x",
                     device=target.device, num_devices=target.devices_per_node)
    job = tfjob_manifest("crnn-train-x", NAMESPACE, image(target.image), spec, workers=2, target=target)
    assert vm.check_object(job, crds) == []


# --- the checks fail when they should ------------------------------------------------------------------------------

POD = "/spec/template/spec"  # a Deployment's or Job's pod
WORKER = "/spec/tfReplicaSpecs/Worker"
TFJOB_POD = f"{WORKER}/template/spec"
JOB_LABELS = "/spec/template/metadata/labels"

# name: (the real overlay the broken one is on, its kustomization additions, the start of the expected message)
BROKEN = {
    "limits removed": (
        "local", _json_patch("Deployment", "mlflow", ("remove", f"{POD}/containers/0/resources/limits")),
        "bad: Deployment/mlflow: spec.template: container 'mlflow': no resources.limits.cpu"),
    "init container escalates": (
        "gpu", _json_patch("Deployment", "mlflow",
                           ("replace", f"{POD}/initContainers/0/securityContext/allowPrivilegeEscalation", True)),
        "bad: Deployment/mlflow: spec.template: init container 'db-upgrade': "
        "securityContext.allowPrivilegeEscalation is not false"),
    "privileged": (
        "local", _json_patch("Deployment", "postgres", ("add", f"{POD}/containers/0/securityContext/privileged", True)),
        "bad: Deployment/postgres: spec.template: container 'postgres': securityContext.privileged is true"),
    "runs as root": (
        "local", _json_patch("Deployment", "minio", ("remove", f"{POD}/containers/0/securityContext/runAsNonRoot"),
                             ("remove", f"{POD}/securityContext/runAsNonRoot")),
        "bad: Deployment/minio: spec.template: container 'minio': securityContext.runAsNonRoot is not true"),
    "writable root filesystem": (
        "local", _json_patch("Job", "create-buckets",
                             ("replace", f"{POD}/containers/0/securityContext/readOnlyRootFilesystem", False)),
        "bad: Job/create-buckets: spec.template: container 'create-buckets': "
        "securityContext.readOnlyRootFilesystem is not true"),
    "capabilities kept": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu",
                           ("remove", f"{TFJOB_POD}/containers/0/securityContext/capabilities")),
        "bad: TFJob/crnn-train-gpu: spec.tfReplicaSpecs.Worker.template: container 'tensorflow': "
        "securityContext.capabilities.drop does not include ALL"),
    "no readiness probe": (
        "local", _json_patch("Deployment", "postgres", ("remove", f"{POD}/containers/0/readinessProbe")),
        "bad: Deployment/postgres: spec.template: container 'postgres': no readinessProbe"),
    "unpinned image": (
        "gpu", {"images": [{"name": "crnn-pipeline/cpu", "newTag": "latest"}]},
        "bad: Deployment/mlflow: spec.template: container 'mlflow': image 'crnn-pipeline/cpu:latest' is not pinned"),
    "misspelt built-in field": (
        "local", _json_patch("Deployment", "mlflow", ("add", f"{POD}/containers/0/resource", {})),
        "bad: Deployment/mlflow: schema: spec.template.spec.containers.0: Additional properties are not allowed "
        "('resource' was unexpected)"),
    "misspelt TFJob field": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("add", f"{WORKER}/replica", 2)),
        "bad: TFJob/crnn-train-gpu: schema: spec.tfReplicaSpecs.Worker: Additional properties are not allowed "
        "('replica' was unexpected)"),
    "unknown TFJob role": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu",
                           {"op": "move", "from": WORKER, "path": "/spec/tfReplicaSpecs/Master"}),
        "bad: TFJob/crnn-train-gpu: schema: spec.tfReplicaSpecs: Additional properties are not allowed "
        "('Master' was unexpected)"),
    "bad restart policy": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("replace", f"{WORKER}/restartPolicy", "Maybe")),
        "bad: TFJob/crnn-train-gpu: schema: spec.tfReplicaSpecs.Worker.restartPolicy: 'Maybe' is not one of"),
    "misspelt field in the TFJob's pod": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("add", f"{TFJOB_POD}/containers/0/imagePullPolicyy", "Always")),
        "bad: TFJob/crnn-train-gpu: spec.tfReplicaSpecs.Worker.template: schema: template.spec.containers.0: "
        "Additional properties are not allowed ('imagePullPolicyy' was unexpected)"),
    "TFJob container not named tensorflow": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("replace", f"{TFJOB_POD}/containers/0/name", "trainer")),
        "bad: TFJob/crnn-train-gpu: spec.tfReplicaSpecs.Worker.template: no container named 'tensorflow'"),
    "a TFJob without a deadline": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("remove", "/spec/runPolicy/activeDeadlineSeconds")),
        "bad: TFJob/crnn-train-gpu: spec.runPolicy.activeDeadlineSeconds is not set"),
    "a TFJob that stays forever": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu", ("remove", "/spec/runPolicy/ttlSecondsAfterFinished")),
        "bad: TFJob/crnn-train-gpu: spec.runPolicy.ttlSecondsAfterFinished is not set"),
    "a TFJob's workers in the mesh": (
        "gpu", _json_patch("TFJob", "crnn-train-gpu",
                           ("remove", f"{WORKER}/template/metadata/labels/sidecar.istio.io~1inject"),
                           ("remove", f"{WORKER}/template/metadata/annotations/sidecar.istio.io~1inject")),
        'bad: TFJob/crnn-train-gpu: spec.tfReplicaSpecs.Worker.template: no sidecar.istio.io/inject: "false"'),
    "a Job in the mesh": (
        "multi-user-profile", _json_patch("Job", "crnn-datasets-init",
                                          ("replace", f"{JOB_LABELS}/sidecar.istio.io~1inject", "true"),
                                          ("remove", "/spec/template/metadata/annotations")),
        'bad: Job/crnn-datasets-init: spec.template: no sidecar.istio.io/inject: "false"'),
    "a shared volume with no storage class": (
        "gpu", _json_patch("PersistentVolumeClaim", "crnn-datasets", ("remove", "/spec/storageClassName")),
        "bad: PersistentVolumeClaim/crnn-datasets: ReadWriteMany with no storageClassName"),
    "secret generated outside local": (
        "gpu", {"secretGenerator": [{"name": "mlflow-db", "literals": ["uri=postgresql://u:p@db/mlflow"]}],
                "generatorOptions": {"disableNameSuffixHash": True}},
        "bad: Secret/mlflow-db: holds literal data (uri): only the local overlay may"),
}


@needs_kubectl
@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_overlay_is_reported_naming_the_object(tmp_path, crds, case):
    on, extra, expected = BROKEN[case]
    problems = _problems(_overlay(tmp_path, on, extra), crds)
    assert any(p.startswith(expected) for p in problems), "\n".join(problems)


ASCENDJOB_EXAMPLE = vm.OVERLAYS_DIR / "ascend" / "ascendjob.yaml"
CHIEF = "/spec/replicaSpecs/Chief"
CHIEF_POD = f"{CHIEF}/template/spec"

# name: (JSON-patch ops on the example AscendJob, the expected message after "bad: AscendJob/crnn-train-npu: ")
BROKEN_ASCENDJOB = {
    "writable hostPath": (
        [("replace", f"{CHIEF_POD}/containers/0/volumeMounts/0/readOnly", False)],
        "spec.replicaSpecs.Chief.template: container 'ascend': hostPath volume 'ascend-driver' is not mounted "
        "readOnly"),
    "container not named ascend": (
        [("replace", f"{CHIEF_POD}/containers/0/name", "trainer")],
        "spec.replicaSpecs.Chief.template: no container named 'ascend'"),
    "bad restart policy": (
        [("replace", f"{CHIEF}/restartPolicy", "Maybe")],
        "schema: spec.replicaSpecs.Chief.restartPolicy: 'Maybe' is not one of"),
    "bad success policy": (
        [("replace", "/spec/successPolicy", "AllChiefs")], "schema: spec.successPolicy: 'AllChiefs' is not one of"),
    "suspend, which AscendJob lacks": (
        [("add", "/spec/runPolicy/suspend", True)],
        "schema: spec.runPolicy: Additional properties are not allowed ('suspend' was unexpected)"),
    "lower-case replica type": (
        [{"op": "move", "from": CHIEF, "path": "/spec/replicaSpecs/chief"}],
        "schema: spec.replicaSpecs: Additional properties are not allowed ('chief' was unexpected)"),
    "Master in a tensorflow job": (
        [{"op": "move", "from": "/spec/replicaSpecs/Worker", "path": "/spec/replicaSpecs/Master"}],
        "spec.replicaSpecs.Master: not a tensorflow replica type (one of Chief, Worker)"),
    "no framework label": (
        [("remove", "/metadata/labels/framework")], "metadata.labels.framework is not set"),
    "stays forever": (
        [("remove", "/spec/runPolicy/ttlSecondsAfterFinished")], "spec.runPolicy.ttlSecondsAfterFinished is not set"),
    "no pod deadline": (
        [("remove", f"{CHIEF_POD}/activeDeadlineSeconds")],
        "spec.replicaSpecs.Chief.template: spec.activeDeadlineSeconds is not set"),
    "in the mesh": (
        [("remove", f"{CHIEF}/template/metadata/labels/sidecar.istio.io~1inject"),
         ("remove", f"{CHIEF}/template/metadata/annotations/sidecar.istio.io~1inject")],
        'spec.replicaSpecs.Chief.template: no sidecar.istio.io/inject: "false"'),
}


def _with_example_ascendjob(tmp_path: Path, *ops: tuple | dict) -> Path:
    """An overlay on ascend that applies the example AscendJob (as `kubectl apply -k` of it would), patched."""
    extra = _json_patch("AscendJob", "crnn-train-npu", *ops) if ops else {}
    return _overlay(tmp_path, "ascend", extra, {ASCENDJOB_EXAMPLE.name: ASCENDJOB_EXAMPLE.read_text()})


@needs_kubectl
def test_the_example_ascendjob_renders_and_passes_in_an_overlay(tmp_path, crds):
    folder = _with_example_ascendjob(tmp_path)
    assert _problems(folder, crds) == []
    job = _find(vm.render(folder), "AscendJob", "crnn-train-npu")
    assert job["spec"]["replicaSpecs"]["Worker"] == job["spec"]["replicaSpecs"]["Chief"]  # the YAML alias, expanded


@needs_kubectl
@pytest.mark.parametrize("case", BROKEN_ASCENDJOB)
def test_a_broken_example_ascendjob_is_reported(tmp_path, crds, case):
    ops, expected = BROKEN_ASCENDJOB[case]
    problems = _problems(_with_example_ascendjob(tmp_path, *ops), crds)
    assert any(p.startswith(f"bad: AscendJob/crnn-train-npu: {expected}") for p in problems), "\n".join(problems)


def _set(obj: dict, dotted: str, value: object) -> None:
    """Set (or, for value None, delete) obj's key at a dotted path."""
    *parents, key = dotted.split(".")
    for part in parents:
        obj = obj[part]
    if value is None:
        del obj[key]
    else:
        obj[key] = value


# name: ({dotted path: value, None to delete}, every problem check_object finds), each one the operator refuses
ASCEND_OPERATOR_RULES = {
    "wrong framework label": (
        {"metadata.labels.framework": "jax"},
        ["metadata.labels.framework is 'jax': the ascend-operator fails the job unless it is one of mindspore, "
         "pytorch, tensorflow"]),
    "another framework's replica types": (
        {"metadata.labels.framework": "pytorch"},
        ["spec.replicaSpecs.Chief: not a pytorch replica type (one of Master, Worker)",
         "spec.replicaSpecs has no Master: a pytorch AscendJob needs one (replicas 1)"]),
    "Worker-only tensorflow job": (
        {"spec.replicaSpecs.Chief": None, "spec.replicaSpecs.Worker.replicas": 2},
        ["spec.replicaSpecs has no Chief: a tensorflow AscendJob needs one (replicas 1)"]),
    "Chief of 2 replicas": (
        {"spec.replicaSpecs.Chief.replicas": 2}, ["spec.replicaSpecs.Chief.replicas is 2: a Chief runs exactly 1"]),
}


@pytest.mark.parametrize("case", ASCEND_OPERATOR_RULES)
def test_check_object_refuses_what_the_ascend_operator_would_fail(crds, examples, case):
    changes, expected = ASCEND_OPERATOR_RULES[case]
    job = copy.deepcopy(_find(examples["ascend"], "AscendJob", "crnn-train-npu"))
    for dotted, value in changes.items():
        _set(job, dotted, value)
    assert vm.check_object(job, crds) == expected


def test_the_ascend_operator_rules_follow_the_framework():
    specs = {"Scheduler": {"replicas": 1}, "Worker": {"replicas": 4}}
    job = {"kind": "AscendJob", "metadata": {"labels": {"framework": "mindspore"}}, "spec": {"replicaSpecs": specs}}
    assert vm.check_ascendjob(job) == []
    del specs["Scheduler"]
    assert vm.check_ascendjob(job) == []  # a MindSpore job may go without a Scheduler (on one NPU)
    job["metadata"]["labels"]["framework"] = "pytorch"
    assert vm.check_ascendjob(job) == ["spec.replicaSpecs has no Master: a pytorch AscendJob needs one (replicas 1)"]
    assert vm.check_ascendjob({"kind": "TFJob"}) == []


@needs_kubectl
def test_a_multi_user_overlay_that_writes_into_kubeflow_is_reported(tmp_path, crds):
    folder = _overlay(tmp_path, "multi-user-profile", {"namespace": NAMESPACE}, name="multi-user-bad")
    problems = _problems(folder, crds)
    assert "multi-user-bad: PersistentVolumeClaim/crnn-datasets: in namespace 'kubeflow': a multi-user overlay " \
           "puts its objects in a profile namespace or its own" in problems


@needs_kubectl
def test_a_secret_file_with_data_is_rejected_and_main_fails(tmp_path, capsys):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "crnn-s3"},
              "stringData": {"AWS_SECRET_ACCESS_KEY": "x"}}
    folder = _overlay(tmp_path, "ascend", {}, {"secret.yaml": yaml.safe_dump(secret)})
    assert vm.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  bad: Secret/crnn-s3" in out
    assert "holds literal data (AWS_SECRET_ACCESS_KEY)" in out
    assert "ok    bad: Deployment/mlflow" in out


def test_throwaway_secrets_need_their_label(crds):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "eA=="}}
    assert vm.check_secret(secret, literal_allowed=True) == \
        ["a throwaway Secret must carry the label crnn-pipeline/local-only=true"]
    secret["metadata"]["labels"] = {"crnn-pipeline/local-only": "true"}
    assert vm.check_object(secret, crds, literal_secrets_allowed=True) == []
    assert vm.check_secret({"kind": "Secret", "metadata": {"name": "s"}}, literal_allowed=False) == []


def test_a_custom_resource_without_a_crd_is_an_error(crds):
    job = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}}
    (problem,) = vm.check_object(job, crds)
    assert problem.startswith("no schema: batch.volcano.sh/v1alpha1 Job is neither")


def test_missing_kubectl_says_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    with pytest.raises(vm.ManifestError, match="kubectl not found on PATH: install kubectl"):
        vm.render(vm.OVERLAYS_DIR / "gpu")
    assert vm.main([]) == 2
    assert "install kubectl" in capsys.readouterr().err


@needs_kubectl
def test_an_overlay_kustomize_cannot_build_is_reported(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    assert vm.main([str(folder)]) == 2
    assert f"kubectl kustomize {folder} failed" in capsys.readouterr().err
