"""Ascend NPU launch: one training process per NPU, joined into one HCCL group.

``crnn launch-npu [options] -- COMMAND ...`` runs COMMAND once per local NPU and goes like this:

1. Local devices: ``--devices`` ("0-7", "0,2,4", "0-3,6") or, in a Kubernetes pod, the Ascend device plugin's
   ``ASCEND_VISIBLE_DEVICES``. These are physical ids (``/dev/davinciN``, ``address_N`` in /etc/hccn.conf,
   ``device_id`` in a rank table). A process picks its NPU by *logical* id (``ASCEND_DEVICE_ID``): in a container
   that holds only the visible devices the runtime numbers them 0..n-1 in order; on a bare host logical is physical.
2. Who is which rank, from the first of:

   a. ``--rank-table PATH``: an existing v1.0 table, e.g. the ``hccl.json`` Volcano mounts from the
      ``rings-config-<job>`` ConfigMap (commonly /user/serverid/devindex/config/hccl.json) or one the ascend-operator
      writes. It says ``"status": "initializing"`` until every pod is placed, so the launcher polls until
      "completed". With several servers this server's entry is found by ``--server-id`` or this host's IP.
   b. The ascend-operator's ``CM_*`` variables (AscendJob, ``mindxdl.gitee.com/v1``): the adapter then forms the
      group through the chief at ``CM_CHIEF_IP:CM_CHIEF_PORT`` by itself and must not also see RANK_TABLE_FILE,
      RANK_ID or RANK_SIZE. So the launcher writes no table, passes the ``CM_*`` variables through unchanged and adds
      only the device ids (and ``CRNN_LOCAL_RANK``, for ``NpuContext``).
   c. Otherwise (one server): a table is built from /etc/hccn.conf's device IPs and written atomically.

3. Launch: one process per local device with RANK_SIZE, RANK_ID, ASCEND_DEVICE_ID, DEVICE_ID, RANK_TABLE_FILE and
   JOB_ID. Each rank's output is prefixed with ``[rank N]`` or written to ``<log-dir>/rank-N.log``. When a rank fails
   the others are stopped (SIGTERM, then SIGKILL after a grace period), because they would otherwise hang in their
   next collective waiting for it, and the launcher exits with the failed rank's code. SIGTERM/SIGINT sent to the
   launcher (a pod being deleted, Ctrl-C) are forwarded to every rank.

Inside each rank, ``open_npu()`` opens the NPU through ``npu_device`` (the TF 2.x adapter, which reads the variables
above), and ``NpuContext.from_env()`` says which rank this process is, for sharding data and picking the one rank
that writes checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO

log = logging.getLogger(__name__)

HCCN_CONF = Path("/etc/hccn.conf")
RANK_TABLE_VERSION = "1.0"
# The five variables the adapter needs for a group without a rank table (the operator adds CM_RANK and
# CM_LOCAL_WORKER: this pod's index and its NPU count).
CM_VARS = ("CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE", "CM_WORKER_IP", "CM_WORKER_SIZE")
CM_OPERATOR_VARS = (*CM_VARS, "CM_RANK", "CM_LOCAL_WORKER")
RANK_TABLE_VARS = ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE")
LOCAL_RANK_VAR = "CRNN_LOCAL_RANK"  # ours: a rank's index on its server, set only in CM_* mode
GRACE_S = 10.0
NPU_MISSING = ("npu_device (the Ascend adapter for TensorFlow 2.x) is not installed: it ships with CANN in Ascend's "
               "TensorFlow image; run on the crnn-pipeline/ascend image (images/Dockerfile.ascend)")

_ADDRESS_KEY = re.compile(r"address_(\d+)", re.ASCII)
_INTEGER = re.compile(r"-?\d+", re.ASCII)
_output_lock = threading.Lock()


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
    """A device list like "0-7", "0,2,4" or "0-3,6" -> sorted device ids, each once."""
    devices: set[int] = set()
    for part in spec.split(","):
        for device in _device_range(part.strip(), spec):
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        json.dump(table, tmp, indent=2)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
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
    if table.get("version") != RANK_TABLE_VERSION:
        raise ValueError(f"{where}: version is {table.get('version')!r}; only version {RANK_TABLE_VERSION!r} "
                         "tables (with server_list) are supported")
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


def wait_for_rank_table(path: str | Path, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict:
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
    common |= {"RANK_SIZE": str(size), "RANK_TABLE_FILE": str(rank_table_file), "JOB_ID": job_id}
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
    common |= {"JOB_ID": job_id, "CM_LOCAL_WORKER": str(len(devices))}
    return [common | _device_env(logical[device]) | {LOCAL_RANK_VAR: str(index)}
            for index, device in enumerate(devices)]


# --- launching ----------------------------------------------------------------------------------------------------

@dataclass
class _Rank:
    label: str
    process: subprocess.Popen
    log_file: IO[bytes] | None = None
    pump: threading.Thread | None = None


def launch(command: Sequence[str], envs: Sequence[Mapping[str, str]], log_dir: Path | None = None,
           grace_s: float = GRACE_S) -> int:
    """Run ``command`` once per environment and wait: 0 when every rank succeeds, else the first failure's code.

    A rank killed by signal N counts as exit code 128 + N, as in a shell.
    """
    if not command:
        raise ValueError("no command to launch")
    if not envs:
        raise ValueError("no ranks to launch")
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    ranks: list[_Rank] = []
    # Forward signals before the first rank starts: each rank has its own session, so a SIGTERM that killed the
    # launcher mid-start would leave the ranks started so far running.
    with _forwarding_signals(ranks):
        try:
            for index, env in enumerate(envs):
                ranks.append(_start(list(command), dict(env), env.get("RANK_ID", str(index)), log_dir))
            log.info("started %d rank(s): %s", len(ranks), " ".join(command))
            return _wait(ranks, grace_s)
        finally:
            _stop(ranks, grace_s)  # a no-op unless starting or waiting failed (e.g. the command does not exist)
            _close(ranks)


def _start(command: list[str], env: dict[str, str], label: str, log_dir: Path | None) -> _Rank:
    # Own session per rank: Ctrl-C at a terminal reaches the ranks once (forwarded by us), and stopping a rank can
    # signal its whole process group, helpers included.
    options = {"env": env, "stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "start_new_session": True}
    if log_dir is None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, **options)
        pump = threading.Thread(target=_prefix_lines, args=(process.stdout, f"[rank {label}] "), daemon=True)
        pump.start()
        return _Rank(label, process, pump=pump)
    log_file = (log_dir / f"rank-{label}.log").open("wb")
    try:
        return _Rank(label, subprocess.Popen(command, stdout=log_file, **options), log_file=log_file)
    except BaseException:
        log_file.close()
        raise


def _prefix_lines(stream: IO[bytes], prefix: str) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", errors="replace")
        with _output_lock:  # whole lines from different ranks never interleave
            sys.stdout.write(prefix + text if text.endswith("\n") else prefix + text + "\n")
            sys.stdout.flush()
    stream.close()


def _wait(ranks: list[_Rank], grace_s: float, poll_s: float = 0.05) -> int:
    while True:
        codes = [rank.process.poll() for rank in ranks]
        failed = next((rank for rank, code in zip(ranks, codes, strict=True) if code not in (None, 0)), None)
        if failed is not None:
            code = _exit_code(failed.process.returncode)
            log.error("rank %s exited with code %d; stopping the other ranks", failed.label, code)
            _stop(ranks, grace_s)
            return code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(poll_s)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(ranks: list[_Rank], grace_s: float) -> None:
    """SIGTERM every rank still running, then SIGKILL the ones still there after ``grace_s``."""
    running = [rank for rank in ranks if rank.process.poll() is None]
    for rank in running:
        _signal(rank.process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for rank in running:
        try:
            rank.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            log.warning("rank %s ignored SIGTERM for %g s; killing it", rank.label, grace_s)
            _signal(rank.process, signal.SIGKILL)
            rank.process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    # An unreaped process keeps its pid, so its process group cannot be someone else's yet.
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


def _close(ranks: list[_Rank]) -> None:
    for rank in ranks:
        if rank.pump is not None:
            rank.pump.join(timeout=5)  # let the last lines out before returning
        if rank.log_file is not None:
            rank.log_file.close()


@contextlib.contextmanager
def _forwarding_signals(ranks: list[_Rank]) -> Iterator[None]:
    """Pass SIGTERM (pod deletion) and SIGINT (Ctrl-C) on to every rank; ``_wait`` then sees them exit."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python only lets the main thread install signal handlers
        return

    def forward(signum: int, _frame: object) -> None:
        log.warning("got %s: passing it on to %d rank(s)", signal.Signals(signum).name, len(ranks))
        for rank in ranks:
            _signal(rank.process, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- inside a rank ------------------------------------------------------------------------------------------------

def open_npu(mixed_precision: bool = False) -> ModuleType:
    """Open this process's NPU (ASCEND_DEVICE_ID) as TensorFlow's default device and return ``npu_device``.
    ``mixed_precision``: the adapter's own (``allow_mix_precision``: float16 where the NPU gains from it).

    Imported here, not at module level, so that everything else in this module works without the adapter.
    """
    try:
        import npu_device
    except ModuleNotFoundError as err:
        if err.name != "npu_device":
            raise RuntimeError(f"npu_device is installed but cannot import {err.name}: {err}") from err
        raise RuntimeError(NPU_MISSING) from err
    except ImportError as err:  # typically CANN's libraries are not on LD_LIBRARY_PATH
        raise RuntimeError(f"npu_device is installed but failed to load ({err}); source CANN's set_env.sh "
                           "(the crnn-pipeline/ascend image sets them in its environment)") from err
    if mixed_precision:
        npu_device.global_options().precision_mode = "allow_mix_precision"
    npu_device.open().as_default()
    return npu_device


@dataclass(frozen=True)
class NpuContext:
    """Which rank this process is: for sharding data and for letting only rank 0 write checkpoints."""

    rank: int
    size: int
    device_id: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> NpuContext:
        """From RANK_ID / RANK_SIZE / ASCEND_DEVICE_ID, or from the operator's CM_* variables.

        Without either, a single process: rank 0 of 1.
        """
        device_id = _int_var(env, "ASCEND_DEVICE_ID", default=0)
        if cm_env_present(env):
            return cls._from_cm(env, device_id)
        size = _int_var(env, "RANK_SIZE", default=1, minimum=1)
        if size == 1:
            return cls(_int_var(env, "RANK_ID", default=0, maximum=0), 1, device_id)
        if not env.get("RANK_TABLE_FILE"):
            raise ValueError(f"RANK_SIZE={size} needs RANK_TABLE_FILE (start the ranks with crnn launch-npu)")
        return cls(_int_var(env, "RANK_ID", maximum=size - 1), size, device_id)

    @classmethod
    def _from_cm(cls, env: Mapping[str, str], device_id: int) -> NpuContext:
        # The operator gives each pod CM_RANK (its index) and CM_LOCAL_WORKER (its NPUs); our launcher gives each
        # rank its index in the pod. These ranks are for our own bookkeeping (sharding, the chief); the adapter
        # numbers its HCCL ranks itself.
        clash = [name for name in RANK_TABLE_VARS if env.get(name)]
        if clash:
            raise ValueError(f"both the CM_* variables and {', '.join(clash)} are set; the adapter accepts only one")
        size = _int_var(env, "CM_WORKER_SIZE", minimum=1)
        local_size = _int_var(env, "CM_LOCAL_WORKER", default=size, minimum=1, maximum=size)
        local_rank = _int_var(env, LOCAL_RANK_VAR, default=0 if local_size == 1 else None, maximum=local_size - 1)
        pod = _int_var(env, "CM_RANK", default=0 if local_size == size else None)
        rank = pod * local_size + local_rank
        if rank >= size:
            raise ValueError(f"CM_RANK={pod} x CM_LOCAL_WORKER={local_size} + {LOCAL_RANK_VAR}={local_rank} is "
                             f"rank {rank}, beyond CM_WORKER_SIZE={size}")
        return cls(rank, size, device_id)


def _int_var(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0,
             maximum: int | None = None) -> int:
    text = env.get(name, "").strip()
    if not text:
        if default is None:
            raise ValueError(f"{name} is not set")
        return default
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bounds = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}={text!r} is not an integer {bounds}")
    return value


# --- command line -------------------------------------------------------------------------------------------------

def add_launch_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``launch-npu``; its handler (``args.handler``) returns the exit code."""
    p = subparsers.add_parser("launch-npu", help="run a command once per Ascend NPU, as one HCCL group",
                              description="Run COMMAND once per local Ascend NPU with the rank variables npu_device "
                                          "reads, e.g.: crnn launch-npu --devices 0-7 -- crnn train --device npu ...")
    p.add_argument("--devices", metavar="SPEC", help="device ids, e.g. 0-7 or 0,2,4 (default: $ASCEND_VISIBLE_DEVICES)")
    p.add_argument("--hccn-conf", type=Path, default=HCCN_CONF, metavar="PATH",
                   help=f"device IPs for the generated rank table (default: {HCCN_CONF})")
    p.add_argument("--rank-table", type=Path, metavar="PATH",
                   help="use this rank table (e.g. the hccl.json Volcano or the ascend-operator mounts) instead of "
                        "writing one; waits while its status is 'initializing'")
    p.add_argument("--rank-table-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for --rank-table to be ready (default: 600)")
    p.add_argument("--server-id", help="this server's server_id in the rank table (default: $XDL_IP, $POD_IP or "
                                       "the hostname's address)")
    p.add_argument("--job-id", help="JOB_ID for every rank (default: $JOB_ID or a new one)")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help="write each rank's output to DIR/rank-<rank>.log instead of prefixing it with [rank N]")
    p.add_argument("launch_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the command each rank runs")
    p.set_defaults(handler=run_launch_command)
    return p


def run_launch_command(args: argparse.Namespace) -> int:
    """``crnn launch-npu``: work out every local rank's environment, then launch and wait."""
    command = list(args.launch_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ValueError("no command: put it after --, e.g. crnn launch-npu --devices 0-7 -- crnn train ...")
    env = dict(os.environ)
    job_id = args.job_id or env.get("JOB_ID") or uuid.uuid4().hex[:12]
    return launch(command, _launch_envs(args, env, job_id), args.log_dir)


def _launch_envs(args: argparse.Namespace, env: dict[str, str], job_id: str) -> list[dict[str, str]]:
    if args.rank_table is not None:
        return _envs_from_table(args, env, job_id)
    devices = visible_devices(env, args.devices)
    if cm_env_present(env):
        log.info("ascend-operator CM_* variables set: no rank table, the adapter forms the group via %s:%s",
                 env.get("CM_CHIEF_IP"), env.get("CM_CHIEF_PORT"))
        return cm_envs(devices, job_id, env)
    server_id = args.server_id or (host_ips(env) or ["127.0.0.1"])[0]
    table = build_rank_table(devices, read_hccn_conf(args.hccn_conf), server_id)
    path = write_rank_table(table, _table_path(args.log_dir, job_id))
    log.info("wrote rank table %s for devices %s", path, devices)
    return rank_envs(table, job_id, path, env, server_id=server_id)


def _envs_from_table(args: argparse.Namespace, env: dict[str, str], job_id: str) -> list[dict[str, str]]:
    table = wait_for_rank_table(args.rank_table, args.rank_table_timeout)
    server = local_server(table, args.server_id, env)
    in_table = sorted(int(device["device_id"]) for device in server["device"])
    if args.devices is not None and parse_devices(args.devices) != in_table:
        raise ValueError(f"--devices {args.devices} but {args.rank_table} gives server {server['server_id']} "
                         f"devices {in_table}")
    if cm_env_present(env):
        log.info("using %s; the CM_* variables are withheld from the ranks", args.rank_table)
    return rank_envs(table, job_id, args.rank_table.resolve(), env, server_id=server["server_id"])


def _table_path(log_dir: Path | None, job_id: str) -> Path:
    if log_dir is not None:
        return log_dir.resolve() / "rank_table.json"
    return Path(tempfile.gettempdir()) / f"crnn-rank-table-{job_id}.json"
