"""The training loop: tf.data over shards -> CRNN under a distribution strategy -> checkpoints -> export.

Data parallel: each replica takes ``batch_size`` samples a step (global batch = batch_size x replicas), the
per-sample CTC loss is averaged over the global batch, and the learning rate is the recipe's rate scaled
linearly with the global batch (``TrainConfig.scaled_learning_rate``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from crnn.config import Recipe
from crnn.data.tfrecord import make_dataset, manifest_sha256, read_manifest
from crnn.evaluate.benchmark import evaluate_dataset
from crnn.model.ctc import ctc_loss
from crnn.model.export import EXPORT_DIR, export_model
from crnn.model.network import build_crnn
from crnn.tracking import StepRun
from crnn.train.schedule import WarmupCosine

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float  # mean loss of the last logged window; nan when no step ran
    val_accuracy: float | None
    export_dir: Path


def _optimizer(recipe: Recipe, schedule: WarmupCosine) -> keras.optimizers.Optimizer:
    cfg = recipe.train
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


def _restore(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager, recipe: Recipe,
             out_dir: Path) -> int:
    """Restores the latest checkpoint of the same recipe (only ``steps`` may grow); returns its step."""
    saved = out_dir / RECIPE_FILE
    if saved.is_file():
        previous = Recipe.load(saved)
        changed = {k for k, v in previous.flat_params().items() if recipe.flat_params().get(k) != v}
        if changed - {"train.steps"}:
            raise ValueError(f"{out_dir} holds checkpoints of a different recipe ({', '.join(sorted(changed))} "
                             "differ); train into another folder, or pass --no-resume")
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    step = int(checkpoint.optimizer.iterations)
    if step > recipe.train.steps:
        raise ValueError(f"{manager.latest_checkpoint} is at step {step}, past the {recipe.train.steps} steps "
                         "asked for")
    log.info("resumed from %s at step %d", manager.latest_checkpoint, step)
    return step


def train_model(recipe: Recipe, train_dirs: Path | Sequence[Path], out_dir: Path, val_dir: Path | None = None,
                run: StepRun | None = None, strategy: tf.distribute.Strategy | None = None,
                resume: bool = True) -> TrainResult:
    """Trains to ``recipe.train.steps`` on the converted folders ``train_dirs``, resuming from
    ``out_dir/checkpoints`` when asked and possible; exports the model to ``out_dir/export``."""
    run = run or StepRun()
    strategy = strategy or tf.distribute.get_strategy()
    cfg = recipe.train
    out_dir = Path(out_dir)
    train_dirs = [Path(train_dirs)] if isinstance(train_dirs, (str, Path)) else [Path(d) for d in train_dirs]
    for data_dir in train_dirs:
        if read_manifest(data_dir).get("label_policy", {}).get("unfiltered"):
            raise ValueError(f"{data_dir} is an unfiltered benchmark split (labels may be empty or too long for "
                             "CTC); it can be evaluated on, not trained on")
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    log.info("training %s preset on %d replica(s), global batch %d (%d per replica)",
             recipe.preset, replicas, global_batch, cfg.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    run.log_params({**recipe.flat_params(), "replicas": replicas, "global_batch": global_batch,
                    **{f"data.manifest_sha256/{d.parent.name}/{d.name}": manifest_sha256(d) for d in train_dirs}})

    schedule = WarmupCosine(cfg.scaled_learning_rate(global_batch), cfg.warmup_steps, cfg.steps)
    with strategy.scope():
        model = build_crnn(recipe.model)
        optimizer = _optimizer(recipe, schedule)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, out_dir / CHECKPOINT_DIR, max_to_keep=cfg.keep_checkpoints)
    step = _restore(checkpoint, manager, recipe, out_dir) if resume and manager.latest_checkpoint else 0
    recipe.save(out_dir / RECIPE_FILE)

    # A resumed run reshuffles with a seed of its own, rather than replaying the samples it has seen.
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(train_dirs, recipe.model, ctx.get_per_replica_batch_size(global_batch),
                                 training=True, seed=cfg.seed + step, shuffle_buffer=cfg.shuffle_buffer,
                                 input_context=ctx))
    train_step = _step_function(model, optimizer, strategy, global_batch)
    iterator = iter(dataset)
    window = _Window()
    last_loss = float("nan")
    while step < cfg.steps:
        window.add(float(train_step(iterator)))
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = window.metrics(global_batch) | {"learning_rate": float(schedule(step - 1))}
            last_loss = metrics["loss"]
            run.log_metrics(metrics, step=step)
            log.info("step %d/%d loss %.4f lr %.5f %.0f ms/step %.0f img/s", step, cfg.steps, metrics["loss"],
                     metrics["learning_rate"], metrics["step_time_ms"], metrics["images_per_sec"])
            window = _Window()
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
    return TrainResult(steps=step, final_loss=last_loss, val_accuracy=val_accuracy, export_dir=export_dir)


class _Window:
    """Losses and wall time since the last log line."""

    def __init__(self):
        self.losses: list[float] = []
        self.started = time.perf_counter()

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def metrics(self, global_batch: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return {"loss": sum(self.losses) / len(self.losses),
                "step_time_ms": 1000 * elapsed / len(self.losses),
                "images_per_sec": global_batch * len(self.losses) / elapsed}
