"""The training loop: tf.data over shards -> CRNN on a device backend -> checkpoints -> export.

Data parallel: each replica takes ``batch_size`` samples a step from its own part of the data (global batch =
batch_size x replicas over every worker), the per-sample CTC loss is averaged over the global batch and the
gradients summed over replicas (NPU ranks: averaged by the adapter), and the learning rate is the recipe's
rate scaled linearly with the global batch (``TrainConfig.scaled_learning_rate``, Goyal et al. 2017).

Checkpoints hold the model, the optimiser, the step and the input pipeline's position, so a resumed run
continues the same schedule on the samples it had not yet seen. They are written every ``checkpoint_every``
steps and at the end (TensorFlow writes the files under temporary names and updates the ``checkpoint``
index last, so a kill never leaves a half-written latest checkpoint), the latest ``keep_checkpoints`` kept. A
save that fails (a full disk) stops training with an ``OSError`` naming the checkpoint; its partial files are
removed and the checkpoints before it stay, for a resume once there is room.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from crnn.config import Recipe
from crnn.data.input_pipeline import make_dataset, manifest_sha256, read_manifest
from crnn.evaluate.benchmark import evaluate_dataset
from crnn.model.ctc import ctc_loss
from crnn.model.export import EXPORT_DIR, export_model
from crnn.model.network import build_crnn
from crnn.tracking import StepRun
from crnn.train.devices import Backend, make_backend
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
    model: keras.Model | None = field(default=None, repr=False, compare=False)


class NonFiniteLoss(FloatingPointError):
    """Training diverged; the checkpoints on disk are the last good state."""


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers built inside use ``precision`` (a Keras dtype policy name); the global policy is restored."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _optimizer(recipe: Recipe, schedule: WarmupCosine, loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    cfg = recipe.train
    # No clipnorm here: Keras clips each replica's part of the gradient before summing them; the step clips
    # the summed one (_step_function).
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                     weight_decay=cfg.weight_decay or None)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def _step_function(model: keras.Model, optimizer, backend: Backend, loss_batch: int, clip_norm: float):
    """The compiled training step: one batch per replica, the mean loss over ``loss_batch`` samples, the
    gradient of the global batch clipped to ``clip_norm``."""
    strategy = backend.strategy
    replicas = strategy.num_replicas_in_sync

    def global_gradient(grads):
        if backend.all_reduce is not None:
            grads = backend.all_reduce(grads)
        else:
            grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # Scaled gradients (float16) are clipped at the scaled norm: the optimiser unscales them after.
        scale = optimizer.dynamic_scale if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else 1.0
        grads, _ = tf.clip_by_global_norm(grads, clip_norm * tf.cast(scale, tf.float32))
        # apply_gradients sums over the strategy's replicas once more.
        return [g / replicas for g in grads] if replicas > 1 else grads

    def replica_step(features):
        with tf.GradientTape() as tape:
            logits = model(features["image"], training=True)
            per_sample = ctc_loss(features["label"], features["label_length"], tf.cast(logits, tf.float32))
            loss = tf.reduce_sum(per_sample) / loss_batch
            scaled = optimizer.scale_loss(loss)
        grads = global_gradient(tape.gradient(scaled, model.trainable_variables))
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator):
        features, _ = next(iterator)
        losses = strategy.run(replica_step, args=(features,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def _check_recipe(recipe: Recipe, out_dir: Path) -> None:
    saved = out_dir / RECIPE_FILE
    if saved.is_file():
        previous = Recipe.load(saved)
        changed = {k for k, v in previous.flat_params().items() if recipe.flat_params().get(k) != v}
        if changed - {"train.steps"}:
            raise ValueError(f"{out_dir} holds checkpoints of a different recipe ({', '.join(sorted(changed))} "
                             "differ); train into another folder, or pass --no-resume")


def _restore(checkpoint: tf.train.Checkpoint, state: dict[str, object], manager: tf.train.CheckpointManager,
             recipe: Recipe, out_dir: Path, data_saved: bool) -> tuple[int, bool]:
    """Restores the newest readable checkpoint of the same recipe (only ``steps`` may grow), falling back to
    older ones when the newest is damaged; returns its step and whether the input position came back too.

    The input position is restored apart when it cannot be (another device count makes another kind of
    iterator): the caller then reshuffles. When no checkpoint can be read at all, the run stops rather than
    go on from step 0 with whatever a failed restore had already loaded."""
    _check_recipe(recipe, out_dir)
    restorers = [(checkpoint, data_saved)] + ([(tf.train.Checkpoint(**state), False)] if data_saved else [])
    for path in reversed(manager.checkpoints):
        for restorer, data_restored in restorers:
            try:
                restorer.restore(path).expect_partial().assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as err:  # IndexError: a cut data file
                log.warning("checkpoint %s cannot be read%s (%s)", path,
                            " with its input position" if data_restored else "",
                            str(err).splitlines()[0][:200])
                continue
            step = int(checkpoint.step)
            if step > recipe.train.steps:
                raise ValueError(f"{path} is at step {step}, past the {recipe.train.steps} steps asked for")
            log.info("resumed from %s at step %d", path, step)
            return step, data_restored
    raise ValueError(f"{manager.directory}: none of its checkpoints could be read (see the warnings above); "
                     "train into another folder, or pass --no-resume to start over")


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


def _scratch_dir(out_dir: Path, backend: Backend) -> Path:
    """Where a worker other than the chief saves: multi-worker saving is collective, so every worker takes
    part, but only the chief's checkpoints are the run's. Removed when training ends."""
    return out_dir / f".worker-{backend.worker}"


def _checkpoint_dir(out_dir: Path, backend: Backend) -> Path:
    return out_dir / CHECKPOINT_DIR if backend.is_chief else _scratch_dir(out_dir, backend) / CHECKPOINT_DIR


def _resume_from(checkpoint: tf.train.Checkpoint, state: dict[str, object], manager: tf.train.CheckpointManager,
                 out_dir: Path, backend: Backend) -> tuple[tf.train.Checkpoint, tf.train.CheckpointManager, bool]:
    """(what to restore into, the checkpoints to restore from, whether they hold this process's input
    position). A worker other than the chief resumes from its own scratch checkpoints when their latest is at
    the chief's step (a killed run: its own part of the data goes on where it was); otherwise (a finished run
    extended, whose scratch checkpoints are gone) from the chief's, where ``out_dir`` is one volume every worker
    mounts: weights, optimizer and step only, since the chief's input position is the chief's part of the data."""
    if backend.is_chief:
        return checkpoint, manager, True
    chiefs = tf.train.CheckpointManager(checkpoint, out_dir / CHECKPOINT_DIR, max_to_keep=None)
    if not chiefs.checkpoints or _number(manager.latest_checkpoint) == _number(chiefs.latest_checkpoint):
        return checkpoint, manager, True
    return tf.train.Checkpoint(**state), chiefs, False


def _number(path: str | None) -> int | None:
    """The step of checkpoint ``.../ckpt-N``."""
    return None if path is None else int(path.rsplit("-", 1)[1])


def _check_agreement(backend: Backend, step: int | None, out_dir: Path) -> None:
    """Every process must go on from the same step (``None``: this one could not resume and is about to raise):
    with different ones, their collectives would pair steps that do not belong together, and one that stopped
    would leave the others waiting forever. Every process learns the same figures, so all stop together."""
    if backend.workers == 1:
        return
    failed, mean = (float(v) for v in backend.mean_over_processes([step is None, step or 0]))
    if failed > 0:
        if step is None:
            return  # the caller raises why
        raise ValueError(f"worker {backend.worker}: another worker could not resume from its checkpoints "
                         "(see its log); stopping with it")
    spread = float(backend.mean_over_processes([abs(step - mean)])[0])
    if spread > 0:
        raise ValueError(f"worker {backend.worker} resumed at step {step}, the workers at {mean:g} on average: "
                         f"every worker must read the chief's checkpoints in {out_dir / CHECKPOINT_DIR} (a volume "
                         "they all mount), or pass --no-resume to start over")


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
    cfg = recipe.train
    out_dir = Path(out_dir)
    train_dirs = _train_dirs(train_dirs)
    global_batch = cfg.batch_size * backend.replicas
    log.info("training %s preset on %d replica(s) (%s), global batch %d (%d per replica)",
             recipe.preset, backend.replicas, backend.device, global_batch, cfg.batch_size)
    keras.utils.set_random_seed(cfg.seed)
    data_checksums = {f"data.manifest_sha256/{d.parent.name}/{d.name}": manifest_sha256(d) for d in train_dirs}
    run.log_params({**recipe.flat_params(), "replicas": backend.replicas, "global_batch": global_batch,
                    "device": backend.device, "workers": backend.workers, **data_checksums})

    schedule = WarmupCosine(cfg.scaled_learning_rate(global_batch), cfg.warmup_steps, cfg.steps)
    policy, loss_scaling = _precision_plan(cfg.precision, backend.device)
    with backend.strategy.scope(), dtype_policy(policy):
        model = build_crnn(recipe.model)
        optimizer = _optimizer(recipe, schedule, loss_scaling)
        optimizer.build(model.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")  # host-side: not mirrored

    iterator = iter(_dataset(backend, train_dirs, recipe, global_batch))
    state = {"model": model, "optimizer": optimizer, "step": step_var}
    try:  # the input pipeline's position too, where the iterator can be saved
        checkpoint = tf.train.Checkpoint(**state, data=iterator)
        data_saved = True
    except ValueError:  # MultiWorkerMirroredStrategy's iterators cannot be
        checkpoint, data_saved = tf.train.Checkpoint(**state), False
    checkpoint_dir = _checkpoint_dir(out_dir, backend)
    if not resume and checkpoint_dir.is_dir():
        # Kept, a later resume (recipe.json is this run's now) would take the earlier run's weights for its own.
        log.warning("%s: --no-resume: removing the checkpoints of the earlier run", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=cfg.keep_checkpoints)
    restorer, saved, own = _resume_from(checkpoint, state, manager, out_dir, backend) if resume else (
        checkpoint, manager, True)
    try:
        step, data_restored = (_restore(restorer, state, saved, recipe, out_dir, data_saved and own)
                               if saved.checkpoints else (0, False))
    except Exception:
        _check_agreement(backend, None, out_dir)  # the other workers stop too, rather than wait for this one
        raise
    _check_agreement(backend, step, out_dir)
    if backend.broadcast is not None:  # after the restore, or each NPU rank would go on with its own reading
        backend.broadcast(model.variables + optimizer.variables)
    if step and not data_restored:
        log.info("the input position is not in the checkpoint: reshuffling with seed %d", cfg.seed + step)
        iterator = iter(_dataset(backend, train_dirs, recipe, global_batch, seed=cfg.seed + step))
    if backend.is_chief:
        recipe.save(out_dir / RECIPE_FILE)

    # NPU ranks each average their own loss and the adapter averages the gradients; replicas of a strategy
    # divide by the global batch and their gradients are summed.
    loss_batch = global_batch if backend.all_reduce is None else cfg.batch_size
    train_step = _step_function(model, optimizer, backend, loss_batch, cfg.clip_norm)
    window = _Window(global_batch, backend.replicas)
    last_loss = float("nan")
    while step < cfg.steps:
        loss = float(train_step(iterator))
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the loss became {loss} at step {step + 1}; stopped with the last good "
                                f"checkpoint kept ({manager.latest_checkpoint or 'none written yet'}); try a lower "
                                "learning rate or float32")
        step += 1
        window.add(loss)
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = window.metrics() | {"learning_rate": float(schedule(step - 1))}
            last_loss = metrics["loss"]
            run.log_metrics(metrics, step=step)
            log.info("step %d/%d loss %.4f lr %.5f %.0f ms/step (p95 %.0f) %.0f img/s", step, cfg.steps,
                     metrics["loss"], metrics["learning_rate"], metrics["step_time_ms"],
                     metrics["step_time_ms_p95"], metrics["images_per_sec"])
            window = _Window(global_batch, backend.replicas)
        if step % cfg.checkpoint_every == 0:
            _save(manager, step_var, step)
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        _save(manager, step_var, step)

    val_accuracy = None
    if val_dir is not None and backend.is_chief:
        result = evaluate_dataset(model, val_dir, recipe.model)
        val_accuracy = result.score.accuracy
        run.log_metrics({"val_accuracy": val_accuracy, "val_ned": result.score.ned}, step=step)
        log.info("validation: accuracy %.4f, NED %.4f on %d samples", val_accuracy, result.score.ned,
                 result.score.num_samples)
    export_dir = out_dir / EXPORT_DIR
    if backend.is_chief:
        lineage = data_checksums | ({"train_run_id": run.run_id} if run.enabled else {})
        export_model(_float32_copy(model, recipe), recipe, export_dir, lineage)
        run.set_tags({"crnn.export_dir": export_dir.resolve(),
                      "crnn.checkpoint": Path(manager.latest_checkpoint).resolve()})
    else:
        shutil.rmtree(_scratch_dir(out_dir, backend), ignore_errors=True)
    return TrainResult(steps=step, final_loss=last_loss, val_accuracy=val_accuracy, export_dir=export_dir,
                       model=model)


def _save(manager: tf.train.CheckpointManager, step_var: tf.Variable, step: int) -> None:
    """Saves checkpoint ``step``. TensorFlow reports a failed write (a full disk) as an OpError naming only its
    temporary file: here the partial files go and the error names the checkpoint and the one that is kept."""
    step_var.assign(step)
    try:
        manager.save(checkpoint_number=step)
    except tf.errors.OpError as err:
        prefix = Path(manager.directory) / f"ckpt-{step}"
        for partial in [*prefix.parent.glob(f"{prefix.name}.*"), *prefix.parent.glob(f"{prefix.name}_temp*")]:
            shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
        cause = re.sub(r"\{\{.*?\}\}\s*", "", err.message)  # drop TensorFlow's "{{function_node ...}}"
        kept = tf.train.latest_checkpoint(manager.directory)  # what the index on disk names, not the manager
        raise OSError(f"cannot save checkpoint {prefix}: {cause}; the last good checkpoint, {kept or 'none yet'}, "
                      "is kept") from None


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
        return {"loss": float(np.mean(self.losses)),
                "step_time_ms": float(ms.mean()), "step_time_ms_p50": float(np.percentile(ms, 50)),
                "step_time_ms_p95": float(np.percentile(ms, 95)),
                "images_per_sec": images_per_sec, "images_per_sec_per_replica": images_per_sec / self.replicas}
