"""The training loop: tf.data over shards -> CRNN under a distribution strategy -> checkpoints -> export.

Data parallel: each replica takes ``batch_size`` samples a step (global batch = batch_size x replicas), the
per-sample CTC loss is averaged over the global batch, and the learning rate is the recipe's rate scaled
linearly with the global batch (``TrainConfig.scaled_learning_rate``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from crnn.config import Recipe
from crnn.data.tfrecord import make_dataset, manifest_sha256
from crnn.evaluate.benchmark import evaluate_dataset
from crnn.model.ctc import ctc_loss
from crnn.model.export import EXPORT_DIR, export_model
from crnn.model.network import build_crnn
from crnn.tracking import StepRun
from crnn.train.schedule import WarmupCosine

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float
    val_accuracy: float | None
    export_dir: Path


def _optimizer(recipe: Recipe, global_batch: int) -> keras.optimizers.Optimizer:
    cfg = recipe.train
    schedule = WarmupCosine(cfg.scaled_learning_rate(global_batch), cfg.warmup_steps, cfg.steps)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay or None, global_clipnorm=cfg.clip_norm)


def _step_function(model: keras.Model, optimizer, strategy: tf.distribute.Strategy, global_batch: int):
    def replica_step(features):
        with tf.GradientTape() as tape:
            logits = model(features["image"], training=True)
            per_sample = ctc_loss(features["label"], features["label_length"], logits)
            loss = tf.reduce_sum(per_sample) / global_batch
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator):
        features, _ = next(iterator)
        losses = strategy.run(replica_step, args=(features,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def train(recipe: Recipe, train_dir: Path, out_dir: Path, val_dir: Path | None = None,
          run: StepRun | None = None, strategy: tf.distribute.Strategy | None = None,
          resume: bool = True) -> TrainResult:
    """Trains to ``recipe.train.steps``, resuming from ``out_dir/checkpoints`` when asked and possible."""
    run = run or StepRun()
    strategy = strategy or tf.distribute.get_strategy()
    cfg = recipe.train
    out_dir = Path(out_dir)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    log.info("training %s preset on %d replica(s), global batch %d (%d per replica)",
             recipe.preset, replicas, global_batch, cfg.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    run.log_params({**recipe.flat_params(), "replicas": replicas, "global_batch": global_batch,
                    "data.train_manifest_sha256": manifest_sha256(train_dir)})

    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(train_dir, recipe.model, ctx.get_per_replica_batch_size(global_batch),
                                 training=True, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
                                 input_context=ctx))
    with strategy.scope():
        model = build_crnn(recipe.model)
        optimizer = _optimizer(recipe, global_batch)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, out_dir / CHECKPOINT_DIR, max_to_keep=cfg.keep_checkpoints)
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resumed from %s at step %d", manager.latest_checkpoint, int(optimizer.iterations))
    recipe.save(out_dir / "recipe.json")

    train_step = _step_function(model, optimizer, strategy, global_batch)
    iterator = iter(dataset)
    step = int(optimizer.iterations)
    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
    loss = float("nan")
    while step < cfg.steps:
        loss = float(train_step(iterator))
        step += 1
        window_loss += loss
        window_steps += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - window_start
            metrics = {
                "loss": window_loss / window_steps,
                "learning_rate": float(optimizer.learning_rate),
                "step_time_ms": 1000 * elapsed / window_steps,
                "images_per_sec": global_batch * window_steps / elapsed,
            }
            run.log_metrics(metrics, step=step)
            log.info("step %d/%d loss %.4f lr %.5f %.0f ms/step %.0f img/s", step, cfg.steps, metrics["loss"],
                     metrics["learning_rate"], metrics["step_time_ms"], metrics["images_per_sec"])
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        if step % cfg.checkpoint_every == 0:
            manager.save(checkpoint_number=step)
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        manager.save(checkpoint_number=step)

    val_accuracy = None
    if val_dir is not None:
        result = evaluate_dataset(model, val_dir, recipe.model)
        val_accuracy = result.score.accuracy
        run.log_metrics({"val_accuracy": val_accuracy, "val_ned": result.score.ned}, step=step)
        log.info("validation: accuracy %.4f, NED %.4f on %d samples", val_accuracy, result.score.ned,
                 result.score.num_samples)
    export_dir = export_model(model, recipe, out_dir / EXPORT_DIR)
    return TrainResult(steps=step, final_loss=loss, val_accuracy=val_accuracy, export_dir=export_dir)
