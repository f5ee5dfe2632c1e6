"""Render every kustomize overlay under manifests/ and check what it would put on a cluster, offline.

For each object of each overlay:

- built-in kinds: kubernetes-validate's strict schemas for ``KUBERNETES_VERSION`` (an unknown field is an error);
- custom resources: the openAPIV3Schema of their CRD under manifests/crds, closed the way the API server's strict
  field validation is, and every pod template inside them as a Kubernetes PodTemplate, just as strictly;
- every pod template: the pod policy (requests and limits, a non-root and locked-down security context, a
  read-only root filesystem, probes on long-running containers, pinned images, read-only hostPath mounts) and
  the container an operator finds by name (a TFJob's ``tensorflow``, an AscendJob's ``ascend``);
- Secrets: no literal data, except the labelled throwaway ones of the local overlay;
- jobs end and clean up: a TFJob or AscendJob has a deadline and a time to live (an AscendJob's pods their own
  deadline too), and every TFJob, AscendJob and Job pod template opts out of Istio's sidecar (which never exits);
  a ReadWriteMany volume names its storage class;
- an AscendJob meets the checks the ascend-operator makes when it reconciles it (its framework label, the replica
  types that framework allows, one replica of each but Worker), which would otherwise only fail it on the cluster;
- multi-user overlays (``multi-user-*``) put nothing into ``kubeflow``, which Kubeflow owns.

Examples beside an overlay that its kustomization.yaml leaves out (an AscendJob, which cannot be created suspended,
to apply by hand) are read as ``kubectl apply -f`` reads them and checked the same way.

Usage: ``python -m tools.validate_manifests [OVERLAY_DIR ...]`` (default: every overlay under manifests/overlays).
Prints one line per object and exits 1 when anything fails, 2 when an overlay cannot be rendered.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.37.0"  # the newest Kubernetes kubernetes-validate 1.37.0 has schemas for
ROOT = Path(__file__).resolve().parents[1]
OVERLAYS_DIR = ROOT / "manifests" / "overlays"
CRD_DIR = ROOT / "manifests" / "crds"
# The only overlay whose Secrets may hold values (generated, throwaway, labelled with LOCAL_ONLY_LABEL).
LITERAL_SECRETS_OVERLAY = OVERLAYS_DIR / "local"
LOCAL_ONLY_LABEL = ("crnn-pipeline/local-only", "true")
LONG_RUNNING_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
# The operators find the training container by this name (the ascend-operator injects its variables there only).
REQUIRED_CONTAINER = {"TFJob": "tensorflow", "AscendJob": "ascend"}
REPLICA_SPEC_FIELDS = ("tfReplicaSpecs", "replicaSpecs")  # TFJob, AscendJob: role -> {replicas, template}
SIDECAR_INJECT = "sidecar.istio.io/inject"
RUN_TO_COMPLETION_KINDS = frozenset({"Job", "TFJob", "AscendJob"})  # a sidecar would keep their pods from completing
RUN_POLICY_KINDS = frozenset({"TFJob", "AscendJob"})  # spec.runPolicy: a deadline and a time to live
# The ascend-operator's checks (v26.1.0, component/ascend-operator/pkg: api/v1/defaults.go GetJobFramework,
# controllers/v1/ascendjob_validate.go checkReplicaSpecs): the `framework` label names the replica types allowed,
# in exact case; each but Worker runs exactly one replica (the default), and pytorch and tensorflow need theirs.
ASCEND_FRAMEWORK_LABEL = "framework"
ASCEND_REPLICA_TYPES = {"mindspore": ("Scheduler", "Worker"), "pytorch": ("Master", "Worker"),
                        "tensorflow": ("Chief", "Worker")}
ASCEND_LEADER_OPTIONAL = frozenset({"mindspore"})  # a Scheduler-less MindSpore job may use at most one NPU (unchecked)
MULTI_USER_PREFIX = "multi-user-"  # overlays for a multi-user Kubeflow: profile namespaces, never `kubeflow`
KUBEFLOW_NAMESPACE = "kubeflow"

Obj = dict[str, Any]
CrdSchemas = dict[tuple[str, str], Obj]  # (apiVersion, kind) -> JSON schema


class ManifestError(Exception):
    """An overlay could not be rendered or a CRD could not be read."""


@dataclass
class ObjectReport:
    """The problems found in one rendered object; none means it passed."""

    overlay: str
    kind: str
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return f"{self.overlay}: {self.kind}/{self.name}"

    def messages(self) -> list[str]:
        return [f"{self.label}: {problem}" for problem in self.problems]

    def lines(self) -> list[str]:
        return [f"{'ok' if self.ok else 'FAIL':<4}  {self.label}", *(f"      {p}" for p in self.problems)]


# --- rendering -----------------------------------------------------------------------------------------------------

def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise ManifestError("kubectl not found on PATH: install kubectl (1.27 or newer; kustomize is built in) to "
                            "render manifests/overlays, see https://kubernetes.io/docs/tasks/tools/")
    return path


def render(overlay: Path) -> list[Obj]:
    """The objects ``kubectl kustomize overlay`` renders."""
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ManifestError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --- schemas -------------------------------------------------------------------------------------------------------

def openapi_to_jsonschema(schema: Mapping[str, Any]) -> Obj:
    """A Kubernetes structural schema as JSON Schema, closed the way strict field validation is: an object that
    lists its properties takes no others unless it says x-kubernetes-preserve-unknown-fields. (A CRD may not say
    ``additionalProperties: false`` itself; the API server prunes or, validating strictly, rejects instead.)"""
    out = {key: value for key, value in schema.items() if not key.startswith("x-kubernetes-") and key != "nullable"}
    if "properties" in out:
        out["properties"] = {name: openapi_to_jsonschema(sub) for name, sub in out["properties"].items()}
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [openapi_to_jsonschema(sub) for sub in out[key]]
    for key in ("items", "not", "additionalProperties"):
        if isinstance(out.get(key), Mapping):
            out[key] = openapi_to_jsonschema(out[key])
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(crd_dir: Path = CRD_DIR) -> CrdSchemas:
    """The JSON schema of every served version of every CRD under crd_dir; each CRD is itself validated."""
    schemas: CrdSchemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in (doc for doc in yaml.safe_load_all(path.read_text()) if doc):
            problems = validate_builtin(crd)
            if problems:
                raise ManifestError(f"{path}: not a valid CustomResourceDefinition: {'; '.join(problems)}")
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
    return schemas


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top)"


def validate_builtin(obj: Obj) -> list[str]:
    """kubernetes-validate, strict: the first schema error, or that Kubernetes has no such kind."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"schema: {_path(err)}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema: {obj.get('apiVersion')} {obj.get('kind')} is neither a Kubernetes {KUBERNETES_VERSION} "
                f"kind nor defined by a CRD under manifests/crds"]
    return []


def validate_custom(obj: Obj, schema: Obj) -> list[str]:
    """Every error of obj against its CRD's schema, then each pod template in it as a Kubernetes PodTemplate."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=_path)
    problems = [f"schema: {_path(err)}: {err.message}" for err in errors]
    name = (obj.get("metadata") or {}).get("name", "unnamed")
    for where, template in pod_templates(obj):
        wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        problems += [f"{where}: {problem}" for problem in validate_builtin(wrapper)]
    return problems


# --- pod policy ----------------------------------------------------------------------------------------------------

def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _containers(pod_spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [_mapping(container) for container in pod_spec.get(key) or []]


def pod_templates(obj: Obj) -> list[tuple[str, Obj]]:
    """Every pod template in obj as (where it is, {metadata, spec})."""
    kind, spec = obj.get("kind"), _mapping(obj.get("spec"))
    if kind == "Pod":
        return [("pod", {"metadata": obj.get("metadata", {}), "spec": spec})]
    if kind == "PodTemplate":
        return [("template", _mapping(obj.get("template")))]
    if kind == "CronJob":
        return [("spec.jobTemplate.spec.template", _mapping(_mapping(_mapping(spec.get("jobTemplate")).get("spec"))
                                                              .get("template")))]
    if "template" in spec:
        return [("spec.template", _mapping(spec["template"]))]
    found = []
    for replica_field in REPLICA_SPEC_FIELDS:
        for role, replica in _mapping(spec.get(replica_field)).items():
            if "template" in _mapping(replica):
                found.append((f"spec.{replica_field}.{role}.template", _mapping(replica["template"])))
    return found


def check_resources(container: Mapping[str, Any]) -> list[str]:
    resources = _mapping(container.get("resources"))
    return [f"no resources.{section}.{name}" for section in ("requests", "limits") for name in ("cpu", "memory")
            if name not in _mapping(resources.get(section))]


def check_security(container: Mapping[str, Any], pod_security: Mapping[str, Any]) -> list[str]:
    """The container's security context, with the pod's as the fallback where Kubernetes has one."""
    security = _mapping(container.get("securityContext"))
    problems = []
    if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
        problems.append("securityContext.runAsNonRoot is not true")
    uid = security.get("runAsUser", pod_security.get("runAsUser"))
    if uid is None or uid == 0:
        problems.append("securityContext.runAsUser is not set to a non-root uid")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation is not false")
    if security.get("privileged"):
        problems.append("securityContext.privileged is true")
    capabilities = _mapping(security.get("capabilities"))
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("securityContext.capabilities.drop does not include ALL")
    if capabilities.get("add"):
        problems.append(f"securityContext.capabilities.add is not empty: {capabilities['add']}")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append("securityContext.readOnlyRootFilesystem is not true (mount an emptyDir where it writes)")
    return problems


def check_probes(container: Mapping[str, Any]) -> list[str]:
    return [f"no {probe}" for probe in ("livenessProbe", "readinessProbe") if probe not in container]


def check_image(container: Mapping[str, Any]) -> list[str]:
    image = str(container.get("image", ""))
    if "@sha256:" in image:
        return []
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag or tag == "latest":
        return [f"image {image!r} is not pinned to a version tag or digest"]
    return []


def check_container(container: Mapping[str, Any], pod_security: Mapping[str, Any], long_running: bool) -> list[str]:
    problems = check_resources(container) + check_security(container, pod_security) + check_image(container)
    return problems + (check_probes(container) if long_running else [])


def check_pod_spec(spec: Mapping[str, Any]) -> list[str]:
    """Pod-wide settings: no host namespaces, hostPath volumes mounted read-only."""
    problems = [f"pod: {flag} is true" for flag in ("hostNetwork", "hostPID", "hostIPC") if spec.get(flag)]
    volumes = [_mapping(volume) for volume in spec.get("volumes") or []]
    host_paths = {volume.get("name") for volume in volumes if "hostPath" in volume}
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        for mount in map(_mapping, container.get("volumeMounts") or []):
            if mount.get("name") in host_paths and not mount.get("readOnly"):
                problems.append(f"container {container.get('name')!r}: hostPath volume {mount['name']!r} is not "
                                f"mounted readOnly")
    return problems


def check_pod_template(template: Mapping[str, Any], long_running: bool, required_container: str | None = None
                       ) -> list[str]:
    """The pod policy for every container (init containers too; probes only where long_running)."""
    spec = _mapping(template.get("spec"))
    pod_security = _mapping(spec.get("securityContext"))
    problems = check_pod_spec(spec)
    for container in _containers(spec, "initContainers"):
        problems += [f"init container {container.get('name')!r}: {problem}"
                     for problem in check_container(container, pod_security, long_running=False)]
    containers = _containers(spec, "containers")
    for container in containers:
        problems += [f"container {container.get('name')!r}: {problem}"
                     for problem in check_container(container, pod_security, long_running)]
    if required_container and required_container not in {container.get("name") for container in containers}:
        problems.append(f"no container named {required_container!r} (the operator finds it by that name)")
    return problems


# --- objects and overlays ------------------------------------------------------------------------------------------

def check_secret(obj: Obj, literal_allowed: bool) -> list[str]:
    """A Secret's values are created on the cluster, never kept here; the local overlay's throwaway ones excepted."""
    if obj.get("kind") != "Secret":
        return []
    keys = sorted({*_mapping(obj.get("data")), *_mapping(obj.get("stringData"))})
    if not keys:
        return []
    if not literal_allowed:
        return [f"holds literal data ({', '.join(keys)}): only the local overlay may; create this Secret on the "
                f"cluster instead (manifests/README.md)"]
    name, value = LOCAL_ONLY_LABEL
    if _mapping(_mapping(obj.get("metadata")).get("labels")).get(name) != value:
        return [f"a throwaway Secret must carry the label {name}={value}"]
    return []


def check_completion(obj: Obj) -> list[str]:
    """Jobs that end and clean up: a TFJob's or AscendJob's deadline and time to live (an AscendJob's pods' own
    deadline too: the ascend-operator ignores runPolicy's); no sidecar in a Job's, TFJob's or AscendJob's pods."""
    kind, problems = obj.get("kind"), []
    if kind in RUN_POLICY_KINDS:
        policy = _mapping(_mapping(obj.get("spec")).get("runPolicy"))
        problems += [f"spec.runPolicy.{key} is not set" for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished")
                     if key not in policy]
    if kind == "AscendJob":
        problems += [f"{where}: spec.activeDeadlineSeconds is not set (the ascend-operator does not enforce "
                     "runPolicy.activeDeadlineSeconds)" for where, template in pod_templates(obj)
                     if "activeDeadlineSeconds" not in _mapping(template.get("spec"))]
    if kind in RUN_TO_COMPLETION_KINDS:
        for where, template in pod_templates(obj):
            metadata = _mapping(template.get("metadata"))
            if "false" not in (_mapping(metadata.get("labels")).get(SIDECAR_INJECT),
                               _mapping(metadata.get("annotations")).get(SIDECAR_INJECT)):
                problems.append(f"{where}: no {SIDECAR_INJECT}: \"false\" (an Istio sidecar never exits, and the "
                                "pod would never complete)")
    return problems


def check_ascendjob(obj: Obj) -> list[str]:
    """What the ascend-operator checks before it starts an AscendJob, and otherwise fails it for (JobValidFailed)."""
    if obj.get("kind") != "AscendJob":
        return []
    framework = _mapping(_mapping(obj.get("metadata")).get("labels")).get(ASCEND_FRAMEWORK_LABEL)
    if framework not in ASCEND_REPLICA_TYPES:
        value = "not set" if framework is None else f"{framework!r}"
        return [f"metadata.labels.{ASCEND_FRAMEWORK_LABEL} is {value}: the ascend-operator fails the job unless it "
                f"is one of {', '.join(ASCEND_REPLICA_TYPES)}"]
    allowed = ASCEND_REPLICA_TYPES[framework]
    replicas = _mapping(_mapping(obj.get("spec")).get("replicaSpecs"))
    problems = [f"spec.replicaSpecs.{role}: not a {framework} replica type (one of {', '.join(allowed)})"
                for role in replicas if role not in allowed]
    problems += [f"spec.replicaSpecs.{role}.replicas is {count}: a {role} runs exactly 1" for role in allowed[:-1]
                 if (count := _mapping(replicas.get(role)).get("replicas", 1)) != 1]
    leader = allowed[0]
    if leader not in replicas and framework not in ASCEND_LEADER_OPTIONAL:
        problems.append(f"spec.replicaSpecs has no {leader}: a {framework} AscendJob needs one (replicas 1)")
    return problems


def check_storage(obj: Obj) -> list[str]:
    spec = _mapping(obj.get("spec"))
    if obj.get("kind") == "PersistentVolumeClaim" and "ReadWriteMany" in (spec.get("accessModes") or []) \
            and not spec.get("storageClassName"):
        return ["ReadWriteMany with no storageClassName: most default classes provision ReadWriteOnce only and "
                "leave the claim Pending; name the cluster's ReadWriteMany class in the overlay"]
    return []


def check_object(obj: Obj, crds: CrdSchemas, literal_secrets_allowed: bool = False) -> list[str]:
    """Schema, pod policy, completion, storage and Secret rules for one rendered object."""
    kind = obj.get("kind")
    schema = crds.get((obj.get("apiVersion"), kind))
    problems = validate_custom(obj, schema) if schema is not None else validate_builtin(obj)
    for where, template in pod_templates(obj):
        problems += [f"{where}: {problem}" for problem in
                     check_pod_template(template, kind in LONG_RUNNING_KINDS, REQUIRED_CONTAINER.get(kind))]
    return problems + check_completion(obj) + check_ascendjob(obj) + check_storage(obj) \
        + check_secret(obj, literal_secrets_allowed)


def check_namespace(obj: Obj, overlay: str) -> list[str]:
    """In multi-user mode nothing goes into ``kubeflow``: the runs execute in profile namespaces."""
    namespace = _mapping(obj.get("metadata")).get("namespace")
    if overlay.startswith(MULTI_USER_PREFIX) and namespace == KUBEFLOW_NAMESPACE:
        return [f"in namespace {KUBEFLOW_NAMESPACE!r}: a multi-user overlay puts its objects in a profile "
                "namespace or its own"]
    return []


def validate_objects(objects: Iterable[Obj], overlay: str, crds: CrdSchemas, literal_secrets_allowed: bool = False
                     ) -> list[ObjectReport]:
    return [ObjectReport(overlay, str(obj.get("kind")), str(_mapping(obj.get("metadata")).get("name")),
                         check_object(obj, crds, literal_secrets_allowed) + check_namespace(obj, overlay))
            for obj in objects]


def examples(overlay: Path) -> list[Path]:
    """The manifests beside an overlay that its kustomization.yaml neither lists as resources nor patches with:
    examples to apply by hand (``kubectl -n NAMESPACE create -f``), like ascend/ascendjob.yaml."""
    path = overlay / "kustomization.yaml"
    if not path.is_file():
        return []
    kustomization = _mapping(yaml.safe_load(path.read_text()))
    used = {*(kustomization.get("resources") or []),
            *(_mapping(patch).get("path") for patch in kustomization.get("patches") or [])}
    return sorted(path for path in overlay.glob("*.yaml") if path.name not in used | {"kustomization.yaml"})


def read_example(path: Path) -> list[Obj]:
    """The objects of an example, as ``kubectl apply -f`` reads them."""
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not YAML: {err}") from err


def validate_overlay(overlay: Path, crds: CrdSchemas | None = None) -> list[ObjectReport]:
    """Render one overlay and check every object in it, then those of its examples (reported as OVERLAY/FILE)."""
    allowed = overlay.resolve() == LITERAL_SECRETS_OVERLAY.resolve()
    crds = load_crd_schemas() if crds is None else crds
    reports = validate_objects(render(overlay), overlay.name, crds, allowed)
    for path in examples(overlay):
        reports += validate_objects(read_example(path), f"{overlay.name}/{path.name}", crds, allowed)
    return reports


def default_overlays() -> list[Path]:
    return sorted(path.parent for path in OVERLAYS_DIR.glob("*/kustomization.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render and strictly validate the kustomize overlays, offline.")
    parser.add_argument("overlays", nargs="*", type=Path, metavar="OVERLAY_DIR",
                        help="overlay folders (default: every one under manifests/overlays)")
    args = parser.parse_args(argv)
    try:
        crds = load_crd_schemas()
        reports = [report for overlay in args.overlays or default_overlays()
                   for report in validate_overlay(overlay, crds)]
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for report in reports:
        print("\n".join(report.lines()))
    failed = sum(not report.ok for report in reports)
    print(f"{len(reports)} objects, {failed} failed (Kubernetes {KUBERNETES_VERSION} schemas, strict; "
          f"CRDs from {CRD_DIR.relative_to(ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
