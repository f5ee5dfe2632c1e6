"""The training loop: tf.data over shards -> CRNN on a device backend -> checkpoints -> export.

Data parallel: each replica takes ``batch_size`` samples a step from its own part of the data (global batch =
batch_size x replicas over every worker), the per-sample CTC loss is averaged over the global batch and the
gradients summed over replicas (NPU ranks: averaged by the adapter), and the learning rate is the recipe's
rate scaled linearly with the global batch (``TrainConfig.scaled_learning_rate``, Goyal et al. 2017).

Checkpoints, and which one a run resumes from: ``crnn.train.checkpoints``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from crnn import keras_compat
from crnn.config import AUTO_CANDIDATES, AUTO_PRECISION, RECIPE_FILE, ModelConfig, Recipe
from crnn.data.input_pipeline import make_dataset, manifest_sha256, read_manifest, without_tuning_thread
from crnn.evaluate.benchmark import evaluate_dataset
from crnn.keras_compat import keras
from crnn.model.ctc import ctc_loss
from crnn.model.export import EXPORT_DIR, export_model
from crnn.model.network import build_crnn, training_unroll
from crnn.tracking import StepRun
from crnn.train.checkpoints import Checkpoints, open_checkpoints, scratch_dir
from crnn.train.devices import Backend, make_backend
from crnn.train.schedule import WarmupCosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float  # mean loss of the last logged window; nan when no step ran
    val_accuracy: float | None
    export_dir: Path
    model: keras.Model | None = field(default=None, repr=False, compare=False)


class NonFiniteLoss(FloatingPointError):
    """Training diverged; the checkpoints on disk are the last good state."""


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers built inside use ``precision`` (a Keras dtype policy name); the global policy is restored."""
    previous = keras_compat.dtype_policy()
    keras_compat.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras_compat.set_dtype_policy(previous)


def _optimizer(recipe: Recipe, schedule: WarmupCosine, loss_scaling: bool = False,
               loss_scale_optimizer: Callable | None = None):
    cfg = recipe.train
    # No clipnorm here: Keras clips each replica's part of the gradient before summing them; the step clips
    # the summed one (_global_gradient).
    optimizer = keras_compat.sgd(schedule, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    return keras_compat.with_loss_scaling(optimizer, loss_scale_optimizer) if loss_scaling else optimizer


def _step_function(model: keras.Model, optimizer, backend: Backend, loss_batch: int, clip_norm: float):
    """The compiled training step: one batch per replica, the mean loss over ``loss_batch`` samples, the
    gradient of the global batch clipped to ``clip_norm``."""
    strategy = backend.strategy

    def replica_step(features):
        with tf.GradientTape() as tape:
            logits = model(features["image"], training=True)
            per_sample = ctc_loss(features["label"], features["label_length"], tf.cast(logits, tf.float32))
            loss = tf.reduce_sum(per_sample) / loss_batch
            scaled = keras_compat.scale_loss(optimizer, loss)
        grads = _global_gradient(tape.gradient(scaled, model.trainable_variables), optimizer, backend, clip_norm)
        optimizer.apply_gradients(list(zip(grads, model.trainable_variables)))  # one each, from the same list
        return loss

    @tf.function
    def train_step(iterator):
        features, _ = next(iterator)
        losses = strategy.run(replica_step, args=(features,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def _global_gradient(grads: list[tf.Tensor], optimizer, backend: Backend, clip_norm: float) -> list[tf.Tensor]:
    """A replica's gradient -> the global batch's, summed over replicas (NPU ranks: averaged by the adapter)
    and clipped to ``clip_norm``, in the share of it this replica hands to ``apply_gradients``."""
    if backend.all_reduce is not None:
        grads = backend.all_reduce(grads)
    else:
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
    # Gradients the optimiser unscales itself as it applies them are clipped at the scaled norm.
    grads, scale = keras_compat.gradients_to_apply(optimizer, grads)
    grads, _ = tf.clip_by_global_norm(grads, clip_norm * tf.cast(scale, tf.float32))
    # apply_gradients sums over the strategy's replicas once more.
    replicas = backend.strategy.num_replicas_in_sync
    return [g / replicas for g in grads] if replicas > 1 else grads


def _train_dirs(train_dirs: Path | Sequence[Path]) -> list[Path]:
    dirs = [Path(train_dirs)] if isinstance(train_dirs, (str, Path)) else [Path(d) for d in train_dirs]
    for data_dir in dirs:
        if read_manifest(data_dir).get("label_policy", {}).get("unfiltered"):
            raise ValueError(f"{data_dir} is an unfiltered benchmark split (labels may be empty or too long for "
                             "CTC); it can be evaluated on, not trained on")
    return dirs


def _dataset(backend: Backend, train_dirs: list[Path], recipe: Recipe, global_batch: int, seed: int | None = None):
    """Each replica's (or NPU rank's) own part of the data, ``batch_size`` samples a step."""
    cfg = recipe.train
    seed = cfg.seed if seed is None else seed

    def per_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(train_dirs, recipe.model, context.get_per_replica_batch_size(global_batch),
                            training=True, seed=seed, shuffle_buffer=cfg.shuffle_buffer,
                            input_context=context)

    if backend.all_reduce is not None:
        return per_pipeline(backend.input_context())
    return backend.strategy.distribute_datasets_from_function(per_pipeline)


def _precision_plan(precision: str, device: str) -> tuple[str, bool]:
    """(the Keras dtype policy, whether the loss is scaled). On NPUs the adapter mixes precisions itself
    (``open_npu``): Keras keeps float32 and scales the loss. float16 gradients underflow without loss
    scaling; bfloat16 has float32's range and needs none."""
    if device == "npu":
        return "float32", precision != "float32"
    return precision, precision == "mixed_float16"


def train_model(recipe: Recipe, train_dirs: Path | Sequence[Path], out_dir: Path, val_dir: Path | None = None,
                run: StepRun | None = None, backend: Backend | None = None,
                resume: bool = True) -> TrainResult:
    """Trains to ``recipe.train.steps`` on the converted folders ``train_dirs``, resuming from
    ``out_dir/checkpoints`` when asked and possible; the chief exports the model to ``out_dir/export``."""
    run = run or StepRun()
    backend = backend or make_backend()
    job = _set_up(recipe, _train_dirs(train_dirs), Path(out_dir), run, backend, resume)
    _resume(job, resume)
    final_loss = _run_steps(job, val_dir)
    val_accuracy = _validate(job, val_dir)
    return TrainResult(steps=job.step, final_loss=final_loss, val_accuracy=val_accuracy, export_dir=_export(job),
                       model=job.model)


@dataclass
class _Training:
    """One run's state, from its set-up to its export."""

    recipe: Recipe
    backend: Backend
    run: StepRun
    out_dir: Path
    train_dirs: list[Path]
    data_checksums: dict[str, str]  # the exported model's lineage
    global_batch: int
    schedule: WarmupCosine
    model: keras.Model
    optimizer: Any  # keras_compat.sgd, maybe with loss scaling
    iterator: Iterator  # the input pipeline's, one batch per replica a step
    checkpoints: Checkpoints
    step: int = 0


def _set_up(recipe: Recipe, train_dirs: list[Path], out_dir: Path, run: StepRun, backend: Backend,
            resume: bool) -> _Training:
    """Logs the run, then builds the model, its optimiser, the input pipeline and the checkpoints of them."""
    cfg = recipe.train
    global_batch = cfg.batch_size * backend.replicas
    log.info("training %s preset on %d replica(s) (%s), global batch %d (%d per replica)",
             recipe.preset, backend.replicas, backend.device, global_batch, cfg.batch_size)
    precision, probed_ms = _resolved_precision(recipe, backend, run)
    recipe = _within_budget(recipe, backend, precision, probed_ms, out_dir / RECIPE_FILE if resume else None, run)
    cfg = recipe.train
    keras_compat.set_random_seed(cfg.seed)  # after the probes, which draw their own weights
    data_checksums = {f"data.manifest_sha256/{d.parent.name}/{d.name}": manifest_sha256(d) for d in train_dirs}
    run.log_params({**recipe.flat_params(), "replicas": backend.replicas, "global_batch": global_batch,
                    "device": backend.device, "workers": backend.workers, **data_checksums})
    schedule = WarmupCosine(cfg.scaled_learning_rate(global_batch), cfg.warmup_steps, cfg.steps)
    model, optimizer = _build(recipe, backend, schedule, precision)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # host-side: not mirrored
    iterator = iter(_dataset(backend, train_dirs, recipe, global_batch))
    checkpoints = open_checkpoints({"model": model, "optimizer": optimizer, "step": step_var}, iterator, out_dir,
                                   backend, cfg.keep_checkpoints, resume)
    return _Training(recipe, backend, run, out_dir, train_dirs, data_checksums, global_batch, schedule, model,
                     optimizer, iterator, checkpoints)


def _build(recipe: Recipe, backend: Backend, schedule: WarmupCosine, precision: str) -> tuple[keras.Model, Any]:
    """The model and its optimiser in ``precision``, their variables placed by the backend's strategy."""
    policy, loss_scaling = _precision_plan(precision, backend.device)
    with backend.strategy.scope(), dtype_policy(policy):
        model = build_crnn(recipe.model, unroll=training_unroll(backend.device))
        optimizer = _optimizer(recipe, schedule, loss_scaling, backend.loss_scale_optimizer)
        keras_compat.build_optimizer(optimizer, model.trainable_variables)
    return model, optimizer


def _timed_here(backend: Backend) -> bool:
    """Whether the step is timed before training: on one CPU replica, where a second model costs little and
    no other process has to agree on the result."""
    return backend.device == "cpu" and backend.replicas == 1  # replicas: over every worker


def _resolved_precision(recipe: Recipe, backend: Backend, run: StepRun) -> tuple[str, float | None]:
    """The precision to train in and its step's time where it was measured: the recipe's precision, or for
    ``auto`` the one of ``AUTO_CANDIDATES`` whose step is fastest here, timed on a few steps of a synthetic
    batch (``_timed_here``; elsewhere float32, untimed). The choice is tagged on the run (``crnn.precision``)
    and the timings logged as parameters."""
    if recipe.train.precision != AUTO_PRECISION:
        return recipe.train.precision, None
    timings: dict[str, float] = {}
    for candidate in AUTO_CANDIDATES if _timed_here(backend) else ():
        try:
            timings[candidate] = _step_ms(recipe, backend, candidate)
        except (tf.errors.OpError, ValueError, TypeError) as err:  # e.g. no bfloat16 kernel in this TensorFlow
            log.warning("precision auto: %s cannot train here (%s)", candidate, str(err).splitlines()[0][:200])
    chosen = min(timings, key=timings.get) if timings else "float32"
    run.set_tags({"crnn.precision": chosen})
    # Parameters, not metrics: one measurement each, which a chart would draw as a lone point.
    run.log_params({f"precision_probe_ms/{name}": f"{ms:.1f}" for name, ms in timings.items()})
    log.info("precision auto: %s (%s)", chosen, ", ".join(f"{name} {ms:.0f} ms/step" for name, ms in
                                                           timings.items()) or "measured on one CPU replica only")
    return chosen, timings.get(chosen)


def _within_budget(recipe: Recipe, backend: Backend, precision: str, step_ms: float | None,
                   resumed_recipe: Path | None, run: StepRun) -> Recipe:
    """``recipe`` with as many steps as its time budget holds at the step time measured here (``step_ms``,
    or timed now), or as many as the run it resumes (``resumed_recipe``) chose: a resumed run keeps its
    schedule. Without a budget, or where the step is not timed (``_timed_here``), the recipe as it is."""
    cfg = recipe.train
    if cfg.time_budget_s is None:
        return recipe
    steps = _resumed_steps(recipe, resumed_recipe)
    if steps is not None:
        log.info("time budget: %d steps, as the run resumed chose", steps)
    elif step_ms is None and not _timed_here(backend):
        log.warning("time budget ignored: the step is timed on one CPU replica only; training %d steps", cfg.steps)
        return recipe
    else:
        step_ms = _step_ms(recipe, backend, precision) if step_ms is None else step_ms
        steps = cfg.steps_within_budget(step_ms)
        run.log_params({"time_budget_step_ms": f"{step_ms:.1f}"})
        log.info("time budget %.0f s at %.0f ms/step: %d of at most %d steps", cfg.time_budget_s, step_ms, steps,
                 cfg.steps)
    return dataclasses.replace(recipe, train=dataclasses.replace(cfg, steps=steps))


def _resumed_steps(recipe: Recipe, saved: Path | None) -> int | None:
    """The steps of the budgeted run saved at ``saved`` where it is this recipe with the same budget."""
    if saved is None or not saved.is_file():
        return None
    previous = Recipe.load(saved)
    return None if recipe.changed_from(previous) - {"train.steps"} else previous.train.steps


def synthetic_features(config: ModelConfig, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch as the step reads it, for timing: random uint8 images and random labels of 5 to 10 characters,
    padded with 0 to ``max_label_length``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 11, batch_size)
    labels = rng.integers(0, config.num_classes - 1, (batch_size, config.max_label_length))
    labels[np.arange(config.max_label_length)[None, :] >= lengths[:, None]] = 0
    images = rng.integers(0, 256, (batch_size, config.height, config.width, config.channels), dtype=np.uint8)
    return {"image": images, "label": labels.astype(np.int64), "label_length": lengths.astype(np.int64)}


def _step_ms(recipe: Recipe, backend: Backend, precision: str, warmup: int = 5, steps: int = 10) -> float:
    """The median time of the training step in ``precision`` on one synthetic batch of the recipe's size
    (random images, labels of 5 to 10 characters), after ``warmup`` steps (tracing included). The first steps
    after tracing run slower than the loop's, and one slow step of a burst on a shared machine would pull a
    mean: the time budget's steps rest on this figure."""
    cfg = recipe.train
    features = synthetic_features(recipe.model, cfg.batch_size, cfg.seed)
    batches = iter(without_tuning_thread(
        tf.data.Dataset.from_tensors((features, tf.zeros([cfg.batch_size], tf.string))).repeat()))
    model, optimizer = _build(recipe, backend, WarmupCosine(cfg.learning_rate, 0, 10**9), precision)
    step = _step_function(model, optimizer, backend, cfg.batch_size, cfg.clip_norm)
    for _ in range(warmup):
        float(step(batches))
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        float(step(batches))
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _resume(job: _Training, resume: bool) -> None:
    """Goes on from the checkpoints where asked and possible, every process with the same variables and its
    input where the checkpoint left it (or, where its position did not come back, on a new shuffle)."""
    job.step, data_restored = job.checkpoints.resume(job.recipe, job.out_dir, job.backend, resume)
    if job.backend.broadcast is not None:  # after the restore, or each NPU rank would go on with its own reading
        job.backend.broadcast(job.model.variables + keras_compat.optimizer_variables(job.optimizer))
    if job.step and not data_restored:
        seed = job.recipe.train.seed + job.step
        log.info("the input position is not in the checkpoint: reshuffling with seed %d", seed)
        job.iterator = iter(_dataset(job.backend, job.train_dirs, job.recipe, job.global_batch, seed=seed))
    if job.backend.is_chief:  # what the next resume checks its recipe against
        job.recipe.save(job.out_dir / RECIPE_FILE)


def _run_steps(job: _Training, val_dir: Path | None = None) -> float:
    """Trains from ``job.step`` to the recipe's steps, checkpointing (and validating on ``val_dir``: a curve,
    the last point of which ``train_model`` adds) every ``checkpoint_every`` and at the end; returns the mean
    loss of the last logged window (nan when no step ran)."""
    cfg, backend = job.recipe.train, job.backend
    # NPU ranks each average their own loss and the adapter averages the gradients; replicas of a strategy
    # divide by the global batch and their gradients are summed.
    loss_batch = job.global_batch if backend.all_reduce is None else cfg.batch_size
    train_step = _step_function(job.model, job.optimizer, backend, loss_batch, cfg.clip_norm)
    window = _Window(job.global_batch, backend.replicas)
    last_loss = float("nan")
    while job.step < cfg.steps:
        loss = float(train_step(job.iterator))
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss} at step {job.step + 1}; stopped with the last good "
                                f"checkpoint kept ({job.checkpoints.latest or 'none written yet'}); try a lower "
                                "learning rate or float32")
        job.step += 1
        window.add(loss)
        if job.step % cfg.log_every == 0 or job.step == cfg.steps:
            last_loss = _log_window(job, window)
            window = _Window(job.global_batch, backend.replicas)
        if job.step % cfg.checkpoint_every == 0:
            job.checkpoints.save(job.step)
            if job.step < cfg.steps:
                _validate(job, val_dir)
    if job.checkpoints.latest is None or not job.checkpoints.latest.endswith(f"-{job.step}"):
        job.checkpoints.save(job.step)
    return last_loss


def _log_window(job: _Training, window: _Window) -> float:
    """Logs the steps since the last log line, at ``job.step``; returns their mean loss."""
    metrics = window.metrics() | {"learning_rate": float(job.schedule(job.step - 1))}
    job.run.log_metrics(metrics, step=job.step)
    log.info("step %d/%d loss %.4f lr %.5f %.0f ms/step (p95 %.0f) %.0f img/s", job.step, job.recipe.train.steps,
             metrics["loss"], metrics["learning_rate"], metrics["step_time_ms"],
             metrics["step_time_ms_p95"], metrics["images_per_sec"])
    return metrics["loss"]


def _validate(job: _Training, val_dir: Path | None) -> float | None:
    """The chief's accuracy on ``val_dir``; None without one, and on the other workers."""
    if val_dir is None or not job.backend.is_chief:
        return None
    result = evaluate_dataset(job.model, val_dir, job.recipe.model, with_loss=True)
    score = result.score
    losses = {} if result.loss is None else {"val_loss": result.loss}  # None: no sample to take it over
    job.run.log_metrics({"val_accuracy": score.accuracy, "val_ned": score.ned, **losses}, step=job.step)
    log.info("validation: accuracy %.4f, NED %.4f, loss %s on %d samples", score.accuracy, score.ned,
             f"{result.loss:.4f}" if losses else "-", score.num_samples)
    return score.accuracy


def _export(job: _Training) -> Path:
    """The export folder: the chief writes the float32 model there with its lineage and tags the run with it;
    the other workers remove their scratch checkpoints instead."""
    export_dir = job.out_dir / EXPORT_DIR
    if job.backend.is_chief:
        lineage = job.data_checksums | ({"train_run_id": job.run.run_id} if job.run.enabled else {})
        export_model(_float32_copy(job.model, job.recipe), job.recipe, export_dir, lineage)
        job.run.set_tags({"crnn.export_dir": export_dir.resolve(),
                          "crnn.checkpoint": Path(job.checkpoints.latest).resolve()})
    else:
        shutil.rmtree(scratch_dir(job.out_dir, job.backend), ignore_errors=True)
    return export_dir


def _float32_copy(model: keras.Model, recipe: Recipe) -> keras.Model:
    """The served model is float32 whatever the training precision, outside any distribution strategy."""
    with dtype_policy("float32"):
        copy = build_crnn(recipe.model, for_training=False)
    copy.set_weights([np.asarray(w) for w in model.get_weights()])
    return copy


class _Window:
    """Per-step losses and wall times since the last log line."""

    def __init__(self, global_batch: int, replicas: int):
        self.global_batch, self.replicas = global_batch, replicas
        self.losses: list[float] = []
        self.times: list[float] = []
        self.last = time.perf_counter()

    def add(self, loss: float) -> None:
        now = time.perf_counter()
        self.losses.append(loss)
        self.times.append(now - self.last)
        self.last = now

    def metrics(self) -> dict[str, float]:
        ms = 1000 * np.asarray(self.times)
        images_per_sec = self.global_batch * len(ms) / (ms.sum() / 1000)
        # Times and rates to a tenth (the UI shows every digit it gets); the loss as it is.
        window = {"loss": float(np.mean(self.losses)), "step_time_ms": round(float(ms.mean()), 1),
                  "step_time_ms_p50": round(float(np.percentile(ms, 50)), 1),
                  "step_time_ms_p95": round(float(np.percentile(ms, 95)), 1),
                  "images_per_sec": round(images_per_sec, 1)}
        if self.replicas > 1:  # on one replica it would repeat images_per_sec as a chart of its own
            window["images_per_sec_per_replica"] = round(images_per_sec / self.replicas, 1)
        return window
