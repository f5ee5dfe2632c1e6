"""Run inside the ascend image (tests/container/test_ascend_image.py): the NPU code path of the training loop on
tf.keras 2.6 with the adapter's collectives passed in as a one-rank group has them (identity), recording each
call. Trains, then resumes (restore, then broadcast), mixed precision through the loss-scale optimiser the
backend names. Prints one JSON line of what happened."""

import json
import sys
from pathlib import Path

import tensorflow as tf

from crnn.config import recipe_for
from crnn.keras_compat import keras
from crnn.train.devices import Backend
from crnn.train.loop import train_model

train_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
calls = {"all_reduce": 0, "broadcast": [], "loss_scale_optimizer": 0}


def all_reduce(values):  # npu_device.distribute.all_reduce(values, "mean") on one worker returns them
    calls["all_reduce"] += 1
    return values


def broadcast(variables):  # npu_device.distribute.broadcast(variables, root_rank=0) on one worker: nothing
    calls["broadcast"].append(len(variables))


def loss_scale_optimizer(optimizer):  # NpuLossScaleOptimizer subclasses tf.keras 2.6's LossScaleOptimizer
    calls["loss_scale_optimizer"] += 1
    return keras.mixed_precision.LossScaleOptimizer(optimizer)


def backend() -> Backend:
    return Backend("npu", tf.distribute.get_strategy(), replicas=1, all_reduce=all_reduce, broadcast=broadcast,
                   loss_scale_optimizer=loss_scale_optimizer)


first = train_model(recipe_for("tiny", steps=2, batch_size=4, checkpoint_every=2, precision="mixed_float16"),
                    train_dir, out, backend=backend())
again = train_model(recipe_for("tiny", steps=4, batch_size=4, checkpoint_every=2, precision="mixed_float16"),
                    train_dir, out, backend=backend())
exported = sorted(p.name for p in again.export_dir.iterdir())
print(json.dumps({**calls, "steps": [first.steps, again.steps], "loss": again.final_loss,
                  "variables": len(again.model.variables), "export": exported}))
