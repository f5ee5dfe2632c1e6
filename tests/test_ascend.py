"""The Ascend NPU launcher: hccn.conf, device lists, rank tables, per-rank environments and real rank processes.

No NPU or adapter is needed: the ranks here are small Python scripts that record what they were given.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crnn.train.ascend import rank_table as ascend
from crnn.train.ascend.context import NpuContext, open_npu
from crnn.train.ascend.launcher import launch
from crnn.train.ascend.rank_table import (
    RankTableNotReady,
    build_rank_table,
    check_device_group,
    cm_env_present,
    cm_envs,
    device_ips,
    load_rank_table,
    parse_devices,
    rank_envs,
    read_annotation_ips,
    read_hccn_conf,
    validate_rank_table,
    visible_devices,
    wait_for_rank_table,
    write_rank_table,
)

CRNN = [sys.executable, "-m", "crnn.cli"]
IPS = {device: f"192.168.100.{101 + device}" for device in range(8)}
HCCN_CONF = "".join(f"address_{d}={ip}\nnetmask_{d}=255.255.255.0\nnetdetect_{d}=192.168.100.1\n"
                    for d, ip in IPS.items())
# Rank variables a rank might see, recorded by RECORD into <out>/env-<rank>.json.
KEYS = ["RANK_ID", "RANK_SIZE", "ASCEND_DEVICE_ID", "DEVICE_ID", "RANK_TABLE_FILE", "JOB_ID", "CRNN_LOCAL_RANK",
        "CM_CHIEF_IP", "CM_LOCAL_WORKER", "KEEP_ME"]
RECORD = f"""
import json, os, sys
name = os.environ.get("RANK_ID") or os.environ["CRNN_LOCAL_RANK"]
with open(os.path.join(sys.argv[1], "env-" + name + ".json"), "w") as f:
    json.dump({{key: os.environ.get(key) for key in {KEYS!r}}}, f)
print("hello from rank", name)
"""
# Writes its pid (atomically) to <out>/pid-<rank>, then sleeps; rank 0 exits with code 3 once the others are up,
# and rank 2 ignores SIGTERM.
STUBBORN = """
import os, signal, sys, time
rank, out = os.environ["RANK_ID"], sys.argv[1]
if rank == "0":
    others, deadline = int(os.environ["RANK_SIZE"]) - 1, time.time() + 10
    while sum(name.startswith("pid-") for name in os.listdir(out)) < others and time.time() < deadline:
        time.sleep(0.02)
    sys.exit(3)
if rank == "2":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(out, "tmp-" + rank), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(out, "tmp-" + rank), os.path.join(out, "pid-" + rank))
time.sleep(60)
"""
SLEEPER = """
import os, sys, time
rank = os.environ["RANK_ID"]
with open(os.path.join(sys.argv[1], "tmp-" + rank), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(sys.argv[1], "tmp-" + rank), os.path.join(sys.argv[1], "pid-" + rank))
time.sleep(60)
"""


def crnn(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*CRNN, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ascend variables the machine might have, plus ``extra``."""
    drop = {"ASCEND_VISIBLE_DEVICES", "XDL_IP", "POD_IP", "JOB_ID", *ascend.CM_OPERATOR_VARS, *ascend.RANK_TABLE_VARS}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def recorded(out: Path) -> dict[str, dict]:
    return {path.stem.removeprefix("env-"): json.loads(path.read_text()) for path in out.glob("env-*.json")}


def two_server_table() -> dict:
    servers = [{"server_id": server_id, "device": [
        {"device_id": str(d), "device_ip": f"192.168.{n}.{d + 1}", "rank_id": str(8 * n + d)} for d in range(8)]}
        for n, server_id in enumerate(["10.0.0.1", "10.0.0.2"])]
    return {"server_count": "2", "server_list": servers, "status": "completed", "version": "1.0"}


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- hccn.conf and devices ----------------------------------------------------------------------------------------

def test_without_hccn_conf_the_device_plugins_pod_annotation_gives_the_ips(tmp_path):
    """A downwardAPI annotations file (key="<Go-quoted value>" lines), holding what the Ascend device plugin
    writes on the pod: ascend-device-plugin pkg/common/proto.go (Instance, Device) @ 56adb78."""
    plugin = json.dumps({"pod_name": "train-chief-0", "server_id": "10.0.0.11", "devices": [
        {"device_id": str(d), "device_ip": IPS[d]} for d in (4, 5, 6, 7)]})
    annotations = tmp_path / "annotations"
    annotations.write_text(f'huawei.com/Ascend910="Ascend910-4,Ascend910-5,Ascend910-6,Ascend910-7"\n'
                           f'ascend.kubectl.kubernetes.io/ascend-910-configuration={json.dumps(plugin)}\n')
    assert read_annotation_ips(annotations) == {d: IPS[d] for d in (4, 5, 6, 7)}
    assert device_ips(tmp_path / "no-hccn.conf", annotations) == {d: IPS[d] for d in (4, 5, 6, 7)}
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    assert device_ips(conf, annotations) == IPS  # the host's file first, where it is mounted
    with pytest.raises(ValueError, match="no device IPs: neither .*no-hccn.conf.* nor .*missing"):
        device_ips(tmp_path / "no-hccn.conf", tmp_path / "missing")
    annotations.write_text('ascend.kubectl.kubernetes.io/ascend-910-configuration="{\\"devices\\": 3}"\n')
    with pytest.raises(ValueError, match=r"annotations:1: .* is not the device plugin's JSON"):
        read_annotation_ips(annotations)


def test_hccn_conf_gives_each_device_its_ip(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text("# written by hccn_tool\n\n" + HCCN_CONF + "  address_9 = 10.1.1.9  \n")
    assert read_hccn_conf(conf) == IPS | {9: "10.1.1.9"}


@pytest.mark.parametrize(("line", "problem"), [
    ("address_3 192.168.100.104", "expected KEY=VALUE"),
    ("address_x=192.168.100.104", "is not address_<device id>"),
    ("address_3=192.168.100.300", "is not an IP address"),
    ("address_0=192.168.100.1", "a second address for device 0"),
])
def test_malformed_hccn_conf_names_the_file_and_line(tmp_path, line, problem):
    conf = tmp_path / "hccn.conf"
    conf.write_text("address_0=192.168.100.101\nnetmask_0=255.255.255.0\n" + line + "\n")
    with pytest.raises(ValueError, match=problem) as err:
        read_hccn_conf(conf)
    assert f"{conf}:3:" in str(err.value)


def test_hccn_conf_without_addresses_is_an_error(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text("netmask_0=255.255.255.0\n")
    with pytest.raises(ValueError, match=f"{conf}: no address_"):
        read_hccn_conf(conf)


@pytest.mark.parametrize(("spec", "devices"), [
    ("0-7", list(range(8))), ("0,2,4", [0, 2, 4]), ("0-3,6", [0, 1, 2, 3, 6]), (" 5 , 1 ", [1, 5]), ("3", [3])])
def test_device_specs(spec, devices):
    assert parse_devices(spec) == devices


@pytest.mark.parametrize(("spec", "problem"), [
    ("", "is not a device id"), ("a", "is not a device id"), ("1-", "is not a device id"),
    ("-1", "is not a device id"), ("0,,1", "is not a device id"), ("3-1", "runs backwards"),
    ("0-3,2", "names device 2 twice")])
def test_bad_device_specs(spec, problem):
    with pytest.raises(ValueError, match=problem):
        parse_devices(spec)


def test_devices_named_as_ascends_job_templates_name_them():
    """Volcano's choice, copied from the huawei.com/Ascend910 annotation into ASCEND_VISIBLE_DEVICES."""
    named = "Ascend910-4,Ascend910-5,Ascend910-6,Ascend910-7"
    assert visible_devices({"ASCEND_VISIBLE_DEVICES": named}) == [4, 5, 6, 7]
    assert parse_devices("Ascend910-2, 3") == [2, 3]
    with pytest.raises(ValueError, match="names device 1 twice"):
        parse_devices("Ascend910-1,1")
    with pytest.raises(ValueError, match="is not a device id"):
        parse_devices("Ascend999-1")


@pytest.mark.parametrize(("devices", "allowed"), [
    ([3], True), ([0, 1], True), ([5, 7], True), ([0, 1, 2, 3], True), ([4, 5, 6, 7], True), (list(range(8)), True),
    ([3, 4], False), ([2, 3, 4, 5], False), ([0, 1, 2], False), (list(range(6)), False)])
def test_device_groups_of_a_910_server(devices, allowed):
    if allowed:
        check_device_group(devices)
    else:
        with pytest.raises(ValueError, match="1, 2, 4 or 8 NPUs|one ring of the server"):
            check_device_group(devices)


def test_a_version_1_2_rank_table_of_the_ascend_operator_is_read(tmp_path):
    table = build_rank_table(range(8), IPS, "10.0.0.7") | {"version": "1.2", "super_pod_list": []}
    for device in table["server_list"][0]["device"]:
        device["super_device_id"] = "0"
    table["server_list"][0] |= {"host_ip": "10.0.0.7", "container_ip": "172.16.0.9"}
    envs = rank_envs(load_rank_table(write_rank_table(table, tmp_path / "hccl.json")), "j", tmp_path / "hccl.json",
                     {"HCCL_CONNECT_TIMEOUT": "1800"})
    assert [env["RANK_ID"] for env in envs] == [str(i) for i in range(8)]
    assert {env["HCCL_CONNECT_TIMEOUT"] for env in envs} == {"1800"}  # the environment's own wins
    with pytest.raises(ValueError, match="versions 1.0, 1.2"):
        validate_rank_table(table | {"version": "2.0"})


def test_visible_devices_come_from_the_device_plugin_or_the_spec():
    assert visible_devices({"ASCEND_VISIBLE_DEVICES": "0,1,2,3"}) == [0, 1, 2, 3]
    assert visible_devices({"ASCEND_VISIBLE_DEVICES": "0,1,2,3"}, "4-5") == [4, 5]
    with pytest.raises(ValueError, match="pass --devices .* ASCEND_VISIBLE_DEVICES"):
        visible_devices({})
    with pytest.raises(ValueError, match="ASCEND_VISIBLE_DEVICES='0,x'"):
        visible_devices({"ASCEND_VISIBLE_DEVICES": "0,x"})


# --- rank tables --------------------------------------------------------------------------------------------------

def test_built_rank_table_is_v1_and_round_trips(tmp_path):
    table = build_rank_table([1, 0], IPS, "10.0.0.7")
    assert table == {"server_count": "1", "server_list": [{"server_id": "10.0.0.7", "device": [
        {"device_id": "0", "device_ip": "192.168.100.101", "rank_id": "0"},
        {"device_id": "1", "device_ip": "192.168.100.102", "rank_id": "1"}]}],
        "status": "completed", "version": "1.0"}
    path = write_rank_table(table, tmp_path / "sub" / "rank_table.json")
    assert load_rank_table(path) == table
    assert [p.name for p in path.parent.iterdir()] == ["rank_table.json"]  # no temp file left behind


def test_rank_table_needs_an_ip_for_every_device():
    with pytest.raises(ValueError, match=r"no device IP for device\(s\) \[8\]"):
        build_rank_table([7, 8], IPS, "10.0.0.7")


def _break(table: dict, how: str) -> object:
    device = table["server_list"][0]["device"]
    if how == "status":
        table["status"] = "failed"
    elif how == "version":
        table["version"] = "0.9"
    elif how == "no servers":
        del table["server_list"]
    elif how == "server count":
        table["server_count"] = "3"
    elif how == "no devices":
        table["server_list"][0]["device"] = []
    elif how == "no server id":
        del table["server_list"][0]["server_id"]
    elif how == "int device id":
        device[0]["device_id"] = 0
    elif how == "bad ip":
        device[0]["device_ip"] = "not-an-ip"
    elif how == "duplicate rank":
        device[1]["rank_id"] = "0"
    elif how == "rank gap":
        device[1]["rank_id"] = "9"
    elif how == "duplicate device":
        device[1]["device_id"] = "0"
    return table


@pytest.mark.parametrize(("how", "problem"), [
    ("status", "status is 'failed', expected 'completed'"),
    ("version", "version is '0.9'"),
    ("no servers", "server_list is missing or empty"),
    ("server count", "server_count is '3' but server_list has 1"),
    ("no devices", r"server_list\[0\] \(10.0.0.7\): device list is missing or empty"),
    ("no server id", r"server_list\[0\]: server_id is missing"),
    ("int device id", r"device\[0\].device_id is 0, expected a string of digits"),
    ("bad ip", r"device\[0\].device_ip: 'not-an-ip' is not an IP address"),
    ("duplicate rank", r"rank ids must be 0..7, each once; got \[0, 0, 2"),
    ("rank gap", r"rank ids must be 0..7, each once; got \[0, 2, 3, 4, 5, 6, 7, 9\]"),
    ("duplicate device", "a device_id appears twice"),
])
def test_invalid_rank_tables_are_explained(tmp_path, how, problem):
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps(_break(build_rank_table(range(8), IPS, "10.0.0.7"), how)))
    with pytest.raises(ValueError, match=problem) as err:
        load_rank_table(path)
    assert str(err.value).startswith(f"{path}: ")


def test_rank_table_that_is_not_json(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text('{"status": "comp')
    with pytest.raises(ValueError, match=f"{path}: not JSON"):
        load_rank_table(path)


def test_waits_for_an_initializing_table_to_complete(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text('{"status": "initializing"}')  # what Volcano's rings-config ConfigMap starts as
    with pytest.raises(RankTableNotReady, match="initializing"):
        load_rank_table(path)
    table = build_rank_table(range(8), IPS, "10.0.0.7")
    writer = threading.Timer(0.4, write_rank_table, (table, path))
    start = time.monotonic()
    writer.start()
    try:
        assert wait_for_rank_table(path, timeout_s=10, poll_s=0.05) == table
    finally:
        writer.join()
    assert 0.4 <= time.monotonic() - start < 5


def test_gives_up_on_a_table_that_stays_initializing(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text('{"status": "initializing"}')
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="not ready after 0.3 s: .*initializing"):
        wait_for_rank_table(path, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - start < 2
    path.write_text(json.dumps(_break(build_rank_table(range(8), IPS, "10.0.0.7"), "status")))
    with pytest.raises(ValueError, match="status is 'failed'"):  # a broken table fails at once, without waiting
        wait_for_rank_table(path, timeout_s=30)


# --- per-rank environments ----------------------------------------------------------------------------------------

def test_rank_envs_for_one_server():
    table = build_rank_table(range(8), IPS, "10.0.0.7")
    base = {"PATH": "/usr/bin", "KEEP_ME": "1", "CM_CHIEF_IP": "10.0.0.1", "CM_RANK": "0"}
    envs = rank_envs(table, "job-1", "/tmp/rank_table.json", base)
    assert [env["RANK_ID"] for env in envs] == [str(i) for i in range(8)]
    for i, env in enumerate(envs):
        assert env == {"PATH": "/usr/bin", "KEEP_ME": "1", "RANK_SIZE": "8", "RANK_ID": str(i),
                       "ASCEND_DEVICE_ID": str(i), "DEVICE_ID": str(i), "RANK_TABLE_FILE": "/tmp/rank_table.json",
                       "JOB_ID": "job-1", "HCCL_CONNECT_TIMEOUT": "600"}  # the CM_* variables are withheld


def test_rank_envs_for_the_second_of_two_servers():
    table = two_server_table()
    by_argument = rank_envs(table, "j", "/t.json", {}, server_id="10.0.0.2")
    by_host_ip = rank_envs(table, "j", "/t.json", {"XDL_IP": "10.0.0.2", "POD_IP": "172.16.0.5"})
    host_keys = {"XDL_IP", "POD_IP"}
    assert by_argument == [{k: v for k, v in env.items() if k not in host_keys} for env in by_host_ip]
    assert [env["RANK_ID"] for env in by_argument] == [str(8 + d) for d in range(8)]
    assert {env["RANK_SIZE"] for env in by_argument} == {"16"}
    assert [env["ASCEND_DEVICE_ID"] for env in by_argument] == [str(d) for d in range(8)]
    with pytest.raises(ValueError, match=r"10.0.0.9\) is not in the rank table's server_list \['10.0.0.1', "
                                         r"'10.0.0.2'\]: pass --server-id"):
        rank_envs(table, "j", "/t.json", {}, server_id="10.0.0.9")


def test_rank_envs_use_logical_ids_in_a_container():
    # The device plugin gave this pod NPUs 4-7; inside the container they are logical devices 0-3.
    table = build_rank_table([4, 5, 6, 7], IPS, "10.0.0.7")
    envs = rank_envs(table, "j", "/t.json", {"ASCEND_VISIBLE_DEVICES": "4,5,6,7"})
    assert [(env["RANK_ID"], env["ASCEND_DEVICE_ID"], env["DEVICE_ID"]) for env in envs] == [
        ("0", "0", "0"), ("1", "1", "1"), ("2", "2", "2"), ("3", "3", "3")]
    with pytest.raises(ValueError, match=r"device\(s\) \[6, 7\] are not in ASCEND_VISIBLE_DEVICES='4,5'"):
        rank_envs(table, "j", "/t.json", {"ASCEND_VISIBLE_DEVICES": "4,5"})


CM = {"CM_CHIEF_IP": "10.0.0.1", "CM_CHIEF_PORT": "2222", "CM_CHIEF_DEVICE": "0", "CM_WORKER_IP": "10.0.0.2",
      "CM_WORKER_SIZE": "16", "CM_RANK": "1", "CM_LOCAL_WORKER": "8"}


def test_operator_cm_variables_pass_through_without_a_rank_table():
    assert not cm_env_present({"RANK_SIZE": "8"}) and cm_env_present({"CM_CHIEF_IP": "10.0.0.1"})
    base = CM | {"ASCEND_VISIBLE_DEVICES": "0-7", "RANK_TABLE_FILE": "/stale.json", "RANK_SIZE": "8", "KEEP_ME": "1"}
    envs = cm_envs(range(8), "j", base)
    for i, env in enumerate(envs):
        assert env == CM | {"ASCEND_VISIBLE_DEVICES": "0-7", "KEEP_ME": "1", "JOB_ID": "j",
                            "HCCL_CONNECT_TIMEOUT": "600", "ASCEND_DEVICE_ID": str(i),
                            "DEVICE_ID": str(i), "CRNN_LOCAL_RANK": str(i)}
    with pytest.raises(ValueError, match="CM_WORKER_IP, CM_WORKER_SIZE not set"):
        cm_envs(range(8), "j", {"CM_CHIEF_IP": "10.0.0.1", "CM_CHIEF_PORT": "2222", "CM_CHIEF_DEVICE": "0"})
    with pytest.raises(ValueError, match=r"CM_LOCAL_WORKER=8 but 2 local device\(s\) \[0, 1\]"):
        cm_envs([0, 1], "j", CM)


# --- NpuContext and open_npu --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "context"), [
    ({}, NpuContext(0, 1, 0)),
    ({"ASCEND_DEVICE_ID": "3"}, NpuContext(0, 1, 3)),
    ({"RANK_SIZE": "8", "RANK_ID": "5", "ASCEND_DEVICE_ID": "5", "RANK_TABLE_FILE": "/t.json"}, NpuContext(5, 8, 5)),
    (CM | {"CRNN_LOCAL_RANK": "3", "ASCEND_DEVICE_ID": "3"}, NpuContext(11, 16, 3)),
    ({k: v for k, v in CM.items() if k not in ("CM_RANK", "CM_LOCAL_WORKER")} | {"CM_WORKER_SIZE": "1"},
     NpuContext(0, 1, 0)),
])
def test_npu_context_from_env(env, context):
    assert NpuContext.from_env(env) == context
    assert context.is_chief == (context.rank == 0)


@pytest.mark.parametrize(("env", "problem"), [
    ({"RANK_SIZE": "8", "RANK_TABLE_FILE": "/t.json"}, "RANK_ID is not set"),
    ({"RANK_SIZE": "8", "RANK_ID": "8", "RANK_TABLE_FILE": "/t.json"}, r"RANK_ID='8' is not an integer in 0..7"),
    ({"RANK_SIZE": "8", "RANK_ID": "1"}, "RANK_SIZE=8 needs RANK_TABLE_FILE"),
    ({"RANK_SIZE": "eight"}, "RANK_SIZE='eight' is not an integer >= 1"),
    ({"ASCEND_DEVICE_ID": "-1"}, "ASCEND_DEVICE_ID='-1' is not an integer >= 0"),
    (CM | {"CRNN_LOCAL_RANK": "0", "RANK_TABLE_FILE": "/t.json"}, "both the CM_\\* variables and RANK_TABLE_FILE"),
    (CM, "CRNN_LOCAL_RANK is not set"),
    ({k: v for k, v in CM.items() if k != "CM_RANK"} | {"CRNN_LOCAL_RANK": "0"}, "CM_RANK is not set"),
])
def test_npu_context_rejects_missing_or_invalid_values(env, problem):
    with pytest.raises(ValueError, match=problem):
        NpuContext.from_env(env)


def test_open_npu_without_the_adapter_names_the_image():
    if importlib.util.find_spec("npu_device") is not None:
        pytest.skip("the Ascend adapter is installed here")
    with pytest.raises(RuntimeError, match=r"run on the crnn-pipeline/ascend image \(images/Dockerfile.ascend\)"):
        open_npu()


def _fake_adapter(tmp_path, monkeypatch, workers_num: int) -> None:
    """An npu_device with the surface of the adapter (Ascend/tensorflow tf_adapter_2.x @ 085a7b2) our NPU backend
    uses: global_options(), open() and its handle, distribute.all_reduce/broadcast, train.optimizer."""
    fake = tmp_path / "npu_device"
    fake.mkdir(exist_ok=True)
    (fake / "__init__.py").write_text(
        "calls = []\n"
        "class _Options:\n"
        "    precision_mode = None\n"
        "_options = _Options()\n"
        "def global_options():\n"
        "    return _options\n"
        "class _Handle:\n"
        f"    workers_num = {workers_num}\n"
        "    def as_default(self):\n"
        "        calls.append('as_default')\n"
        "        return self\n"
        "def open():\n"
        "    calls.append('open')\n"
        "    return _Handle()\n"
        "class distribute:\n"
        "    def all_reduce(values, reduction='mean'):\n"
        "        calls.append(('all_reduce', reduction))\n"
        "        return values\n"
        "    def broadcast(values, root_rank=0):\n"
        "        calls.append(('broadcast', root_rank))\n"
        "class train:\n"
        "    class optimizer:\n"
        "        class NpuLossScaleOptimizer:\n"
        "            pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "npu_device", raising=False)


@pytest.mark.parametrize(("mixed", "mode"), [(False, "must_keep_origin_dtype"), (True, "allow_mix_precision")])
def test_open_npu_opens_the_device_as_default_in_an_explicit_precision(tmp_path, monkeypatch, mixed, mode):
    _fake_adapter(tmp_path, monkeypatch, workers_num=8)
    try:
        module = open_npu(mixed_precision=mixed, workers=8)
        assert module.calls == ["open", "as_default"]
        assert module.global_options().precision_mode == mode  # float32 kept float32, not the adapter's fp16
    finally:
        sys.modules.pop("npu_device", None)


def test_open_npu_fails_loudly_when_the_adapter_trains_alone(tmp_path, monkeypatch):
    _fake_adapter(tmp_path, monkeypatch, workers_num=1)
    try:
        with pytest.raises(RuntimeError, match="joined a group of 1 worker.*set up 8.*each NPU would train alone"):
            open_npu(workers=8)
        assert sys.modules["npu_device"].calls == ["open"]  # never made the default device
    finally:
        sys.modules.pop("npu_device", None)


def test_the_npu_backend_takes_the_adapters_collectives_and_loss_scaling(tmp_path, monkeypatch):
    from crnn.train.devices import make_backend

    _fake_adapter(tmp_path, monkeypatch, workers_num=1)
    try:
        backend = make_backend("npu", env={}, precision="mixed_float16")
        module = sys.modules["npu_device"]
        assert backend.loss_scale_optimizer is module.train.optimizer.NpuLossScaleOptimizer
        assert module.global_options().precision_mode == "allow_mix_precision"
        grads = ["g"]
        assert backend.all_reduce(grads) is grads  # averaged ("mean"): the step divides by this rank's batch
        backend.broadcast([])
        assert module.calls[-2:] == [("all_reduce", "mean"), ("broadcast", 0)]
    finally:
        sys.modules.pop("npu_device", None)


# --- launching real processes -------------------------------------------------------------------------------------

def test_eight_ranks_get_their_own_environment(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    table = build_rank_table(range(8), IPS, "10.0.0.7")
    envs = rank_envs(table, "job-8", tmp_path / "rank_table.json", clean_env(KEEP_ME="yes"))
    assert launch([sys.executable, "-c", RECORD, str(out)], envs, logs) == 0
    seen = recorded(out)
    assert sorted(seen, key=int) == [str(i) for i in range(8)]
    for rank, env in seen.items():
        assert env == {"RANK_ID": rank, "RANK_SIZE": "8", "ASCEND_DEVICE_ID": rank, "DEVICE_ID": rank,
                       "RANK_TABLE_FILE": str(tmp_path / "rank_table.json"), "JOB_ID": "job-8",
                       "CRNN_LOCAL_RANK": None, "CM_CHIEF_IP": None, "CM_LOCAL_WORKER": None, "KEEP_ME": "yes"}
        assert (logs / f"rank-{rank}.log").read_text() == f"hello from rank {rank}\n"


def test_without_a_log_dir_output_is_prefixed_with_the_rank(tmp_path, capsys):
    envs = [clean_env(RANK_ID=str(i)) for i in range(2)]
    assert launch([sys.executable, "-c", "import os; print('line one'); print('rank', os.environ['RANK_ID'])"],
                  envs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == ["[rank 0] line one", "[rank 0] rank 0", "[rank 1] line one", "[rank 1] rank 1"]


def test_a_failing_rank_stops_the_others_and_its_code_is_returned(tmp_path):
    envs = [clean_env(RANK_ID=str(i), RANK_SIZE="4") for i in range(4)]
    start = time.monotonic()
    code = launch([sys.executable, "-c", STUBBORN, str(tmp_path)], envs, tmp_path / "logs", grace_s=1.0)
    elapsed = time.monotonic() - start
    assert code == 3
    assert elapsed < 8  # the sleepers (60 s) were stopped; rank 2 ignored SIGTERM and got SIGKILL after 1 s
    pids = [int((tmp_path / f"pid-{rank}").read_text()) for rank in (1, 2, 3)]
    assert all(is_gone(pid) for pid in pids)


def test_a_command_that_does_not_exist_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        launch([str(tmp_path / "no-such-program")], [clean_env(RANK_ID="0")], tmp_path / "logs")


# --- crnn launch-npu ----------------------------------------------------------------------------------------------

def test_cli_writes_a_rank_table_and_launches_eight_ranks(tmp_path):
    conf, out, logs = tmp_path / "hccn.conf", tmp_path / "out", tmp_path / "logs"
    conf.write_text(HCCN_CONF)
    out.mkdir()
    result = crnn("launch-npu", "--devices", "0-7", "--hccn-conf", conf, "--log-dir", logs, "--job-id", "job-7",
                  "--server-id", "10.0.0.7", "--", sys.executable, "-c", RECORD, out, env=clean_env())
    assert result.returncode == 0, result.stderr
    table = load_rank_table(logs / "rank_table.json")
    assert table == build_rank_table(range(8), IPS, "10.0.0.7")
    seen = recorded(out)
    assert sorted(seen, key=int) == [str(i) for i in range(8)]
    assert {env["RANK_TABLE_FILE"] for env in seen.values()} == {str(logs.resolve() / "rank_table.json")}
    assert {env["JOB_ID"] for env in seen.values()} == {"job-7"}
    assert all(env["ASCEND_DEVICE_ID"] == rank == env["DEVICE_ID"] for rank, env in seen.items())


def test_cli_uses_a_mounted_rank_table_for_this_server(tmp_path):
    hccl, out = tmp_path / "hccl.json", tmp_path / "out"
    write_rank_table(two_server_table(), hccl)
    out.mkdir()
    result = crnn("launch-npu", "--rank-table", hccl, "--", sys.executable, "-c", RECORD, out,
                  env=clean_env(XDL_IP="10.0.0.2", ASCEND_VISIBLE_DEVICES="0-7", JOB_ID="from-env", **CM))
    assert result.returncode == 0, result.stderr
    seen = recorded(out)
    assert sorted(seen, key=int) == [str(8 + d) for d in range(8)]
    for rank, env in seen.items():
        assert (env["RANK_SIZE"], env["ASCEND_DEVICE_ID"], env["JOB_ID"]) == ("16", str(int(rank) - 8), "from-env")
        assert env["RANK_TABLE_FILE"] == str(hccl.resolve()) and env["CM_CHIEF_IP"] is None
    assert "[rank 8] hello from rank 8" in result.stdout


def test_cli_with_operator_cm_variables_writes_no_table(tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    result = crnn("launch-npu", "--log-dir", logs, "--", sys.executable, "-c", RECORD, out,
                  env=clean_env(ASCEND_VISIBLE_DEVICES="0-7", **CM))
    assert result.returncode == 0, result.stderr
    assert not (logs / "rank_table.json").exists()
    seen = recorded(out)
    assert sorted(seen, key=int) == [str(i) for i in range(8)]
    for local_rank, env in seen.items():
        assert env["CRNN_LOCAL_RANK"] == env["ASCEND_DEVICE_ID"] == local_rank
        assert (env["RANK_TABLE_FILE"], env["RANK_ID"], env["CM_CHIEF_IP"]) == (None, None, "10.0.0.1")
    # This pod is CM_RANK 1 of 8 NPUs each: its logs are ranks 8-15's, apart from the chief pod's in a shared folder.
    assert sorted(p.name for p in logs.glob("rank-*.log")) == sorted(f"rank-{r}.log" for r in range(8, 16))


def test_cli_returns_the_failed_ranks_exit_code(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text(HCCN_CONF)
    script = "import os, sys, time; sys.exit(5) if os.environ['RANK_ID'] == '1' else time.sleep(60)"
    start = time.monotonic()
    result = crnn("launch-npu", "--devices", "0-3", "--hccn-conf", conf, "--", sys.executable, "-c", script,
                  env=clean_env())
    assert result.returncode == 5
    assert time.monotonic() - start < 15
    assert "rank 1 exited with code 5; stopping the other ranks" in result.stderr


def test_cli_forwards_sigterm_to_the_ranks(tmp_path):
    conf, out = tmp_path / "hccn.conf", tmp_path / "out"
    conf.write_text(HCCN_CONF)
    out.mkdir()
    launcher = subprocess.Popen([*CRNN, "launch-npu", "--devices", "0,1", "--hccn-conf", str(conf), "--log-dir",
                                 str(tmp_path / "logs"), "--", sys.executable, "-c", SLEEPER, str(out)],
                                env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while len(list(out.glob("pid-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [int(path.read_text()) for path in out.glob("pid-*")]
        assert len(pids) == 2
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=15)
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signal.SIGTERM, stderr
    assert "got SIGTERM: passing it on to 2 rank(s)" in stderr
    assert all(is_gone(pid) for pid in pids)


@pytest.mark.parametrize(("args", "problem"), [
    (["--devices", "0-1", "--hccn-conf", "{conf}"], "no command: put it after --"),
    (["--hccn-conf", "{conf}", "--", "true"], "no devices: pass --devices"),
    (["--devices", "0-9", "--hccn-conf", "{conf}", "--", "true"], r"runs a job on 1, 2, 4 or 8 NPUs, not 10"),
    (["--devices", "3-4", "--hccn-conf", "{conf}", "--", "true"], r"must sit in one ring of the server \(0-3 or 4-7\)"),
    (["--devices", "0-1", "--hccn-conf", "{tmp}/missing.conf", "--", "true"], "no device IPs: neither .*missing.conf"),
    (["--devices", "0-1", "--rank-table", "{table}", "--", "true"], r"--devices 0-1 but .* devices \[0, 1, 2, 3"),
])
def test_cli_errors_are_clear(tmp_path, args, problem):
    conf, table = tmp_path / "hccn.conf", tmp_path / "hccl.json"
    conf.write_text(HCCN_CONF)
    write_rank_table(build_rank_table(range(8), IPS, "10.0.0.7"), table)
    result = crnn("launch-npu", *(a.format(conf=conf, tmp=tmp_path, table=table) for a in args), env=clean_env())
    assert result.returncode == 2
    assert "crnn launch-npu: error:" in result.stderr
    assert re.search(problem, result.stderr), result.stderr
