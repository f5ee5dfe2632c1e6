"""Inside one rank: open its NPU, and say which rank of how many this process is."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

from crnn.train.ascend.rank_table import LOCAL_RANK_VAR, RANK_TABLE_VARS, cm_env_present

NPU_MISSING = ("npu_device (the Ascend adapter for TensorFlow 2.x) is not installed: it ships with CANN in Ascend's "
               "TensorFlow image; run on the crnn-pipeline/ascend image (images/Dockerfile.ascend) built on that image "
               "(make images ASCEND_BASE=<AscendHub's ascend-tensorflow>), not on the stand-in base, which has no CANN")

_INTEGER = re.compile(r"-?\d+", re.ASCII)


# The adapter's precision_mode (npu_device's global_options, set before open()): float32 training kept float32
# (left unset, Atlas training parts run "float32" as fp16: allow_fp32_to_fp16), or float16 where it gains.
PRECISION_MODES = {False: "must_keep_origin_dtype", True: "allow_mix_precision"}


def open_npu(mixed_precision: bool = False, workers: int = 1) -> ModuleType:
    """Open this process's NPU (ASCEND_DEVICE_ID) as TensorFlow's default device and return ``npu_device``.
    ``mixed_precision``: the adapter's own (``allow_mix_precision``: float16 where the NPU gains from it).
    ``workers``: the group the launcher set up; the adapter must have joined one of that size, or its all-reduce
    and broadcast would do nothing and each NPU train alone.

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
    npu_device.global_options().precision_mode = PRECISION_MODES[mixed_precision]
    handle = npu_device.open()
    joined = getattr(handle, "workers_num", None)  # the adapter's handle: npu_device/npu_device.py
    if joined is not None and joined != workers:
        raise RuntimeError(f"the NPU adapter joined a group of {joined} worker(s), the launcher set up {workers} "
                           "(RANK_SIZE, or CM_WORKER_SIZE under the ascend-operator): each NPU would train alone")
    handle.as_default()
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

