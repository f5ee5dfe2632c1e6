"""Who is which rank: hccn.conf's device IPs, device lists and groups, rank tables (v1.0 built and written, v1.0
and v1.2 loaded, validated, waited for) and every local rank's environment."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from crnn.files import write_json

log = logging.getLogger(__package__)  # one logger for the whole launcher

HCCN_CONF = Path("/etc/hccn.conf")
# Where a pod sees its own annotations (a downwardAPI volume), and the one the Ascend device plugin writes with the
# NPUs it allocated and their IPs (ascend-device-plugin pkg/common/constants.go, Pod910DeviceKey; mind-cluster
# v7.3.2 api.Pod910DeviceAnno): {"pod_name", "server_id", "devices": [{"device_id", "device_ip"}, ...]}.
POD_ANNOTATIONS = Path("/etc/podinfo/annotations")
DEVICE_PLUGIN_ANNOTATION = "ascend.kubectl.kubernetes.io/ascend-910-configuration"
RANK_TABLE_VERSION = "1.0"
# Versions read: 1.0 (hccl-controller, the ascend-operator) and 1.2 (the ascend-operator for super-pod jobs, with
# super_device_id and super_pod_list beside the 1.0 fields).
RANK_TABLE_VERSIONS = ("1.0", "1.2")
# The five variables the adapter needs for a group without a rank table (the operator adds CM_RANK and
# CM_LOCAL_WORKER: this pod's index and its NPU count).
CM_VARS = ("CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE", "CM_WORKER_IP", "CM_WORKER_SIZE")
CM_OPERATOR_VARS = (*CM_VARS, "CM_RANK", "CM_LOCAL_WORKER")
RANK_TABLE_VARS = ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE")
LOCAL_RANK_VAR = "CRNN_LOCAL_RANK"  # ours: a rank's index on its server, set only in CM_* mode
RANK_TABLE_TIMEOUT_S = 600.0

_ADDRESS_KEY = re.compile(r"address_(\d+)", re.ASCII)
# ascend-docker-runtime's device names (its regex: Ascend(910|310B|310P|310)-N).
_DEVICE_NAME = re.compile(r"Ascend(?:910|310B|310P|310)-(\d+)", re.ASCII)
# An 8-NPU Ascend 910 server links its NPUs in two rings, 0-3 and 4-7: a group of 2 or 4 must sit in one ring, and
# groups take 1, 2, 4 or 8 (HCCL's rule, which Volcano's Ascend plugin enforces when it places a pod).
GROUP_SIZES = (1, 2, 4, 8)
RING_SIZE = 4
# How long HCCL waits for every rank to join, in seconds: what Ascend's ModelZoo multi-device scripts set most
# (its default is 120, too short for eight processes loading TensorFlow on a busy node).
HCCL_CONNECT_TIMEOUT = "600"


class RankTableNotReady(ValueError):
    """The rank table exists but its scheduler has not filled it in yet (status "initializing")."""


# --- /etc/hccn.conf and device lists ------------------------------------------------------------------------------

def read_hccn_conf(path: str | Path = HCCN_CONF) -> dict[int, str]:
    """Device id -> device IP from the ``address_<id>=<ip>`` lines of hccn.conf; other keys are skipped."""
    path = Path(path)
    ips: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = _hccn_address(line, f"{path}:{number}")
        if entry is None:
            continue
        device, ip = entry
        if device in ips:
            raise ValueError(f"{path}:{number}: a second address for device {device} ({ips[device]} before)")
        ips[device] = ip
    if not ips:
        raise ValueError(f"{path}: no address_<device id>=<ip> lines (run hccn_tool to configure the device IPs)")
    return ips


def read_annotation_ips(path: str | Path = POD_ANNOTATIONS) -> dict[int, str]:
    """Device id -> device IP from the device plugin's annotation in a downwardAPI annotations file, whose lines
    are ``key="<Go-quoted value>"``."""
    path = Path(path)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        key, _, quoted = line.partition("=")
        if key.strip() != DEVICE_PLUGIN_ANNOTATION:
            continue
        where = f"{path}:{number}"
        try:
            devices = json.loads(json.loads(quoted))["devices"]
            ips = {int(d["device_id"]): _checked_ip(d["device_ip"], where) for d in devices}
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{where}: {DEVICE_PLUGIN_ANNOTATION} is not the device plugin's JSON ({err})") from None
        if ips:
            return ips
    raise ValueError(f"{path}: no {DEVICE_PLUGIN_ANNOTATION} with devices (the Ascend device plugin writes it on "
                     "a pod it gave NPUs)")


def device_ips(hccn_conf: str | Path = HCCN_CONF, pod_annotations: str | Path = POD_ANNOTATIONS) -> dict[int, str]:
    """The local NPUs' IPs: from the host's hccn.conf where it is mounted, else from the pod's annotations."""
    if Path(hccn_conf).is_file():
        return read_hccn_conf(hccn_conf)
    if Path(pod_annotations).is_file():
        return read_annotation_ips(pod_annotations)
    raise ValueError(f"no device IPs: neither {hccn_conf} (the host's, mounted into the pod) nor {pod_annotations} "
                     f"(a downwardAPI volume of the pod's annotations, where the device plugin writes "
                     f"{DEVICE_PLUGIN_ANNOTATION}); under an AscendJob the CM_* variables need neither")


def _hccn_address(line: str, where: str) -> tuple[int, str] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{where}: expected KEY=VALUE, got {line.strip()!r}")
    key = key.strip()
    if not key.startswith("address_"):
        return None  # netmask_N, netdetect_N, gateway_N, ...: not needed for a rank table
    match = _ADDRESS_KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"{where}: {key!r} is not address_<device id>")
    return int(match.group(1)), _checked_ip(value.strip(), where)


def _checked_ip(value: object, where: str) -> str:
    try:
        if isinstance(value, str):  # ip_address() would also take an int
            return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    raise ValueError(f"{where}: {value!r} is not an IP address")


def parse_devices(spec: str) -> list[int]:
    """A device list like "0-7", "0,2,4", "0-3,6" or "Ascend910-0,Ascend910-1" -> sorted device ids, each once.
    The named form is what Ascend's job templates pass to ASCEND_VISIBLE_DEVICES from the devices Volcano chose
    (the device plugin's ``huawei.com/Ascend910`` annotation); ascend-docker-runtime takes either."""
    devices: set[int] = set()
    for part in spec.split(","):
        named = _DEVICE_NAME.fullmatch(part.strip())
        for device in range(int(named[1]), int(named[1]) + 1) if named else _device_range(part.strip(), spec):
            if device in devices:
                raise ValueError(f"device list {spec!r} names device {device} twice")
            devices.add(device)
    return sorted(devices)


def _device_range(part: str, spec: str) -> range:
    first, dash, last = part.partition("-")
    if not _is_id(first) or (dash and not _is_id(last)):
        raise ValueError(f"device list {spec!r}: {part!r} is not a device id or a range like 0-7")
    low, high = int(first), int(last) if dash else int(first)
    if high < low:
        raise ValueError(f"device list {spec!r}: range {part!r} runs backwards")
    return range(low, high + 1)


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit()


def visible_devices(env: Mapping[str, str] = os.environ, spec: str | None = None) -> list[int]:
    """The local devices: ``spec`` (``--devices``) when given, else the device plugin's ASCEND_VISIBLE_DEVICES."""
    if spec is not None:
        return parse_devices(spec)
    visible = env.get("ASCEND_VISIBLE_DEVICES", "").strip()
    if not visible:
        raise ValueError("no devices: pass --devices (e.g. 0-7), or run in a pod where the Ascend device plugin "
                         "sets ASCEND_VISIBLE_DEVICES")
    try:
        return parse_devices(visible)
    except ValueError as err:
        raise ValueError(f"ASCEND_VISIBLE_DEVICES={visible!r}: {err}") from None


def check_device_group(devices: Sequence[int]) -> None:
    """One server's devices for one job: 1, 2, 4 or 8 of them, a group of 2 or 4 within one ring."""
    if len(devices) not in GROUP_SIZES:
        raise ValueError(f"devices {list(devices)}: an Ascend 910 server runs a job on 1, 2, 4 or 8 NPUs, not "
                         f"{len(devices)}")
    if len(devices) in (2, 4) and len({device // RING_SIZE for device in devices}) > 1:
        raise ValueError(f"devices {list(devices)}: a group of {len(devices)} must sit in one ring of the server "
                         "(0-3 or 4-7), where HCCL links them")


def logical_ids(devices: Sequence[int], env: Mapping[str, str] = os.environ) -> dict[int, int]:
    """Physical -> logical (ASCEND_DEVICE_ID) ids.

    With ASCEND_VISIBLE_DEVICES set we are in a container holding only those NPUs, which the runtime numbers 0..n-1
    in order; on a bare host logical and physical ids are the same.
    """
    visible = env.get("ASCEND_VISIBLE_DEVICES", "").strip()
    if not visible:
        return {device: device for device in devices}
    order = visible_devices(env)
    missing = [device for device in devices if device not in order]
    if missing:
        raise ValueError(f"device(s) {missing} are not in ASCEND_VISIBLE_DEVICES={visible!r}: "
                         "this container cannot use them")
    return {device: order.index(device) for device in devices}


# --- rank tables --------------------------------------------------------------------------------------------------

def build_rank_table(devices: Sequence[int], device_ips: Mapping[int, str], server_id: str) -> dict:
    """A one-server v1.0 rank table; ranks follow device order."""
    ordered = sorted(set(devices))
    if not ordered:
        raise ValueError("no devices to put in the rank table")
    missing = [device for device in ordered if device not in device_ips]
    if missing:
        raise ValueError(f"no device IP for device(s) {missing} (hccn.conf has addresses for {sorted(device_ips)}): "
                         "each device needs an address_<id> line")
    entries = [{"device_id": str(device), "device_ip": device_ips[device], "rank_id": str(rank)}
               for rank, device in enumerate(ordered)]
    return {"server_count": "1", "server_list": [{"server_id": server_id, "device": entries}],
            "status": "completed", "version": RANK_TABLE_VERSION}


def write_rank_table(table: dict, path: str | Path) -> Path:
    """Write atomically (temp file, then rename), so a rank starting early never reads half a table."""
    path = Path(path)
    write_json(path, table)
    return path


class _NotJson(ValueError):
    """The file is not (yet) JSON: possibly caught mid-write by whoever writes it."""


def load_rank_table(path: str | Path) -> dict:
    """Read and validate a v1.0 rank table; errors name the file and what is wrong."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise _NotJson(f"{path}: not JSON ({err})") from None
    validate_rank_table(table, str(path))
    return table


def validate_rank_table(table: object, where: str = "rank table") -> None:
    """Check status, version, server_list, device entries and that rank ids run 0..n-1, each once."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(table).__name__}")
    _check_status(table, where)
    if table.get("version") not in RANK_TABLE_VERSIONS:
        raise ValueError(f"{where}: version is {table.get('version')!r}; versions {', '.join(RANK_TABLE_VERSIONS)} "
                         "(with server_list) are supported")
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        raise ValueError(f"{where}: server_list is missing or empty")
    count = table.get("server_count")
    if count is not None and count != str(len(servers)):
        raise ValueError(f"{where}: server_count is {count!r} but server_list has {len(servers)} server(s)")
    ranks = [rank for i, server in enumerate(servers) for rank in _server_ranks(server, f"{where}: server_list[{i}]")]
    if sorted(ranks) != list(range(len(ranks))):
        raise ValueError(f"{where}: rank ids must be 0..{len(ranks) - 1}, each once; got {sorted(ranks)}")


def _check_status(table: dict, where: str) -> None:
    status = table.get("status")
    if status == "initializing":
        raise RankTableNotReady(f"{where}: status is 'initializing' (the scheduler has not filled it in yet)")
    if status != "completed":
        raise ValueError(f"{where}: status is {status!r}, expected 'completed'")


def _server_ranks(server: object, where: str) -> list[int]:
    if not isinstance(server, dict) or not isinstance(server.get("server_id"), str) or not server["server_id"]:
        raise ValueError(f"{where}: server_id is missing or not a string")
    devices = server.get("device")
    if not isinstance(devices, list) or not devices:
        raise ValueError(f"{where} ({server['server_id']}): device list is missing or empty")
    ranks = [_device_rank(device, f"{where}.device[{j}]") for j, device in enumerate(devices)]
    ids = [device["device_id"] for device in devices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where} ({server['server_id']}): a device_id appears twice: {ids}")
    return ranks


def _device_rank(device: object, where: str) -> int:
    if not isinstance(device, dict):
        raise ValueError(f"{where}: expected an object")
    for key in ("device_id", "rank_id"):
        value = device.get(key)
        if not isinstance(value, str) or not _is_id(value):
            raise ValueError(f"{where}.{key} is {value!r}, expected a string of digits")
    _checked_ip(device.get("device_ip"), f"{where}.device_ip")
    return int(device["rank_id"])


def wait_for_rank_table(path: str | Path, timeout_s: float = RANK_TABLE_TIMEOUT_S, poll_s: float = 0.5) -> dict:
    """``load_rank_table``, polling while the file is missing, half-written or still "initializing".

    Volcano and the ascend-operator fill in hccl.json only once every pod of the job has been placed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return load_rank_table(path)
        except (RankTableNotReady, _NotJson, FileNotFoundError) as err:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"rank table not ready after {timeout_s:g} s: {err}") from None
            log.info("waiting for the rank table: %s", err)
        time.sleep(poll_s)


# --- per-rank environments ----------------------------------------------------------------------------------------

def host_ips(env: Mapping[str, str] = os.environ) -> list[str]:
    """This server's candidate ids, best first: XDL_IP (Ascend's job templates set it to the node IP), POD_IP, and
    the hostname's address."""
    candidates = [env.get("XDL_IP", ""), env.get("POD_IP", "")]
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    return [ip for ip in dict.fromkeys(candidates) if ip]


def local_server(table: dict, server_id: str | None = None, env: Mapping[str, str] = os.environ) -> dict:
    """This server's entry in ``table``'s server_list: by ``server_id``, else by this host's addresses."""
    servers = table["server_list"]
    wanted = [server_id] if server_id else host_ips(env)
    for candidate in wanted:
        for server in servers:
            # Schedulers put the node IP in server_id; some also list the pod's as container_ip or host_ip.
            if candidate in (server["server_id"], server.get("container_ip"), server.get("host_ip")):
                return server
    if server_id is None and len(servers) == 1:
        return servers[0]  # a one-server table can only be for this server, whatever its id says
    known = [server["server_id"] for server in servers]
    raise ValueError(f"this server ({', '.join(wanted) or 'no address found'}) is not in the rank table's "
                     f"server_list {known}: pass --server-id")


def rank_envs(table: dict, job_id: str, rank_table_file: str | Path, base_env: Mapping[str, str] = os.environ,
              server_id: str | None = None) -> list[dict[str, str]]:
    """One environment per device of this server in ``table``, in rank order."""
    server = local_server(table, server_id, base_env)
    devices = sorted(server["device"], key=lambda device: int(device["rank_id"]))
    logical = logical_ids([int(device["device_id"]) for device in devices], base_env)
    size = sum(len(entry["device"]) for entry in table["server_list"])
    # The adapter refuses CM_* next to a rank table; a pod of an AscendJob has both when hccl.json is mounted.
    common = {key: value for key, value in base_env.items() if key not in CM_OPERATOR_VARS}
    common |= {"RANK_SIZE": str(size), "RANK_TABLE_FILE": str(rank_table_file), "JOB_ID": job_id,
               "HCCL_CONNECT_TIMEOUT": base_env.get("HCCL_CONNECT_TIMEOUT", HCCL_CONNECT_TIMEOUT)}
    return [common | _device_env(logical[int(device["device_id"])]) | {"RANK_ID": device["rank_id"]}
            for device in devices]


def _device_env(logical_id: int) -> dict[str, str]:
    return {"ASCEND_DEVICE_ID": str(logical_id), "DEVICE_ID": str(logical_id)}


def cm_env_present(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the ascend-operator's CM_* variables are set, i.e. the adapter forms the group without a rank table."""
    return any(env.get(name) for name in CM_VARS)


def cm_envs(devices: Sequence[int], job_id: str, base_env: Mapping[str, str] = os.environ) -> list[dict[str, str]]:
    """One environment per local device when the CM_* variables define the group: they pass through unchanged."""
    missing = [name for name in CM_VARS if not base_env.get(name)]
    if missing:
        raise ValueError(f"the CM_* variables are incomplete: {', '.join(missing)} not set")
    local_worker = base_env.get("CM_LOCAL_WORKER")
    if local_worker and local_worker != str(len(devices)):
        raise ValueError(f"CM_LOCAL_WORKER={local_worker} but {len(devices)} local device(s) {list(devices)}: "
                         "every NPU of the pod must run a rank or the group never completes")
    logical = logical_ids(devices, base_env)
    # The adapter ignores CM_* whenever RANK_SIZE is set, and refuses them next to RANK_TABLE_FILE.
    common = {key: value for key, value in base_env.items() if key not in RANK_TABLE_VARS}
    common |= {"JOB_ID": job_id, "CM_LOCAL_WORKER": str(len(devices)),
               "HCCL_CONNECT_TIMEOUT": base_env.get("HCCL_CONNECT_TIMEOUT", HCCL_CONNECT_TIMEOUT)}
    return [common | _device_env(logical[device]) | {LOCAL_RANK_VAR: str(index)}
            for index, device in enumerate(devices)]


# --- every local rank ---------------------------------------------------------------------------------------------

def local_rank_envs(*, devices: str | None = None, hccn_conf: str | Path = HCCN_CONF,
                    pod_annotations: str | Path = POD_ANNOTATIONS, rank_table: str | Path | None = None,
                    rank_table_timeout: float = RANK_TABLE_TIMEOUT_S, server_id: str | None = None,
                    job_id: str | None = None, log_dir: str | Path | None = None,
                    env: Mapping[str, str] = os.environ) -> list[dict[str, str]]:
    """One environment per local rank, the group described by the first of: ``rank_table`` (an existing table,
    waited for), the operator's CM_* variables in ``env``, or a one-server table built from the device IPs
    (``device_ips``) and written into ``log_dir`` (else the temp folder).

    ``devices`` is a spec like "0-7" (default: ASCEND_VISIBLE_DEVICES); ``job_id`` defaults to $JOB_ID or a new one.
    """
    env = dict(env)
    job_id = job_id or env.get("JOB_ID") or uuid.uuid4().hex[:12]
    if rank_table is not None:
        return _envs_from_table(Path(rank_table), rank_table_timeout, devices, server_id, job_id, env)
    local = visible_devices(env, devices)
    check_device_group(local)
    if cm_env_present(env):
        log.info("ascend-operator CM_* variables set: no rank table, the adapter forms the group via %s:%s",
                 env.get("CM_CHIEF_IP"), env.get("CM_CHIEF_PORT"))
        return cm_envs(local, job_id, env)
    server_id = server_id or (host_ips(env) or ["127.0.0.1"])[0]
    table = build_rank_table(local, device_ips(hccn_conf, pod_annotations), server_id)
    path = write_rank_table(table, _table_path(log_dir, job_id))
    log.info("wrote rank table %s for devices %s", path, local)
    return rank_envs(table, job_id, path, env, server_id=server_id)


def _envs_from_table(path: Path, timeout_s: float, devices: str | None, server_id: str | None, job_id: str,
                     env: dict[str, str]) -> list[dict[str, str]]:
    table = wait_for_rank_table(path, timeout_s)
    server = local_server(table, server_id, env)
    in_table = sorted(int(device["device_id"]) for device in server["device"])
    check_device_group(in_table)
    if devices is not None and parse_devices(devices) != in_table:
        raise ValueError(f"--devices {devices} but {path} gives server {server['server_id']} devices {in_table}")
    if cm_env_present(env):
        log.info("using %s; the CM_* variables are withheld from the ranks", path)
    return rank_envs(table, job_id, path.resolve(), env, server_id=server["server_id"])


def _table_path(log_dir: str | Path | None, job_id: str) -> Path:
    if log_dir is not None:
        return Path(log_dir).resolve() / "rank_table.json"
    return Path(tempfile.gettempdir()) / f"crnn-rank-table-{job_id}.json"
