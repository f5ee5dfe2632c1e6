"""Device backends behind one option: ``--device {cpu,gpu,npu} --num-devices N``.

- ``cpu``: ``MirroredStrategy`` over N logical CPU devices (how 8 replicas run on a machine without
  accelerators, and how the tests prove the data-parallel arithmetic);
- ``gpu``: ``MirroredStrategy`` over the first N GPUs;
- several nodes: with a ``TF_CONFIG`` naming more than one worker (a TFJob injects it),
  ``MultiWorkerMirroredStrategy``; every worker runs the same command;
- ``npu``: one process per NPU, started by ``crnn launch-npu`` with ``RANK_SIZE``/``RANK_ID``; the Ascend
  adapter places the ops, the step all-reduces gradients itself and variables start from rank 0's.

Every backend reports the replicas over all workers, so the global batch is ``batch_size x replicas`` and
the learning rate scales with it (``TrainConfig.scaled_learning_rate``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from crnn.config import AUTO_PRECISION, DEVICES


@dataclass
class Backend:
    """Where and how training runs."""

    device: str
    strategy: tf.distribute.Strategy
    replicas: int  # over every worker or process: the global batch is per-replica batch x replicas
    worker: int = 0  # this process's index among the workers (the NPU rank)
    workers: int = 1
    # NPU processes: gradients are averaged across ranks by the adapter, variables broadcast from rank 0, and
    # loss scaling reads the NPU's overflow status (crnn.keras_compat.with_loss_scaling).
    all_reduce: Callable | None = None
    broadcast: Callable | None = None
    loss_scale_optimizer: Callable | None = None

    @property
    def is_chief(self) -> bool:
        """The one process that writes checkpoints, the exported model and tracking."""
        return self.worker == 0

    def mean_over_processes(self, values: Sequence[float]) -> np.ndarray:
        """The mean of each of ``values`` over every process of the run, each giving its own: a collective, so
        every process must call it at the same point."""
        tensor = tf.constant(values, tf.float32)
        if self.all_reduce is not None:
            return self.all_reduce([tensor])[0].numpy()
        if self.workers == 1:
            return tensor.numpy()
        # Every replica of every worker gives its process's values: the mean over replicas is the one over workers.
        mean = self.strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.MEAN, tensor))
        return self.strategy.experimental_local_results(mean)[0].numpy()

    def input_context(self) -> tf.distribute.InputContext:
        """For a process that feeds only itself (NPU rank): which part of the data it reads."""
        return tf.distribute.InputContext(self.workers, self.worker, self.replicas)


def _cluster_workers(env: Mapping[str, str]) -> tuple[int, int]:
    """(workers, this worker's index) from ``TF_CONFIG``; (1, 0) without one."""
    raw = env.get("TF_CONFIG")
    if not raw:
        return 1, 0
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config.get("task", {})
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        index = int(task.get("index", 0)) + (len(cluster.get("chief", [])) if task.get("type") == "worker" else 0)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"TF_CONFIG is not a valid cluster spec ({err}): {raw[:200]}") from None
    return workers, index


def use_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices; must run before TensorFlow starts its runtime."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise RuntimeError(f"cannot split the CPU into {count} devices: TensorFlow has already started with "
                           f"{len(tf.config.list_logical_devices('CPU'))}; choose the backend before any "
                           "other TensorFlow work in this process") from None


def _mirrored(device: str, count: int) -> tf.distribute.Strategy:
    if device == "cpu":
        use_logical_cpus(count)
        names = [d.name for d in tf.config.list_logical_devices("CPU")][:count]
        # One reduction device: NCCL (the GPU default) does not exist for CPUs.
        return tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice())
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) < count:
        raise ValueError(f"--num-devices {count}: this machine has {len(gpus)} GPU(s)")
    return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(count)])


def _npu_backend(env: Mapping[str, str], precision: str) -> Backend:
    from crnn.train.ascend.context import NpuContext, open_npu

    context = NpuContext.from_env(env)
    npu = open_npu(mixed_precision=precision not in ("float32", AUTO_PRECISION), workers=context.size)
    return Backend("npu", tf.distribute.get_strategy(), replicas=context.size, worker=context.rank,
                   workers=context.size,
                   all_reduce=lambda grads: npu.distribute.all_reduce(grads, "mean"),
                   broadcast=lambda variables: npu.distribute.broadcast(variables, root_rank=0),
                   loss_scale_optimizer=npu.train.optimizer.NpuLossScaleOptimizer)


def make_backend(device: str = "cpu", num_devices: int = 1, env: Mapping[str, str] | None = None,
                 precision: str = "float32") -> Backend:
    """The backend for ``device``; ``num_devices`` per worker (for ``npu``, one process per NPU instead).
    ``precision`` matters here only for NPUs, whose adapter applies mixed precision itself."""
    env = os.environ if env is None else env
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if num_devices < 1:
        raise ValueError(f"--num-devices must be at least 1, got {num_devices}")
    if device == "npu":
        return _npu_backend(env, precision)
    workers, index = _cluster_workers(env)
    if workers > 1:
        if device == "cpu":
            use_logical_cpus(num_devices)
        # Collectives over gRPC between the workers TF_CONFIG names; each uses its local devices.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Backend(device, strategy, strategy.num_replicas_in_sync, worker=index, workers=workers)
    if num_devices == 1 and device == "cpu":
        return Backend(device, tf.distribute.get_strategy(), 1)
    strategy = _mirrored(device, num_devices)
    return Backend(device, strategy, strategy.num_replicas_in_sync)
