"""A training run's checkpoints: what they hold, where each worker writes them, which one a run resumes from.

Checkpoints hold the model, the optimiser, the step and the input pipeline's position, so a resumed run
continues the same schedule on the samples it had not yet seen. They are written every ``checkpoint_every``
steps and at the end (TensorFlow writes the files under temporary names and updates the ``checkpoint``
index last, so a kill never leaves a half-written latest checkpoint), the latest ``keep_checkpoints`` kept. A
save that fails (a full disk) stops training with an ``OSError`` naming the checkpoint; its partial files are
removed and the checkpoints before it stay, for a resume once there is room.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from crnn.config import RECIPE_FILE, Recipe
from crnn.train.devices import Backend

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass
class Checkpoints:
    """What a run saves and restores, and the folder this process writes its checkpoints to."""

    checkpoint: tf.train.Checkpoint  # the state, with the input position where ``data_saved``
    state: dict[str, object]  # model, optimizer and step
    manager: tf.train.CheckpointManager
    data_saved: bool

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, step: int) -> None:
        """Saves checkpoint ``step``. TensorFlow reports a failed write (a full disk) as an OpError naming only
        its temporary file: here the partial files go and the error names the checkpoint and the one that is
        kept."""
        self.state["step"].assign(step)
        try:
            self.manager.save(checkpoint_number=step)
        except tf.errors.OpError as err:
            prefix = Path(self.manager.directory) / f"ckpt-{step}"
            for partial in [*prefix.parent.glob(f"{prefix.name}.*"), *prefix.parent.glob(f"{prefix.name}_temp*")]:
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
            cause = re.sub(r"\{\{.*?\}\}\s*", "", err.message)  # drop TensorFlow's "{{function_node ...}}"
            kept = tf.train.latest_checkpoint(self.manager.directory)  # what the index on disk names, not the manager
            raise OSError(f"cannot save checkpoint {prefix}: {cause}; the last good checkpoint, "
                          f"{kept or 'none yet'}, is kept") from None

    def resume(self, recipe: Recipe, out_dir: Path, backend: Backend, resume: bool) -> tuple[int, bool]:
        """The step every process goes on from (0: a fresh start) and whether this one's input position came
        back; ``resume`` False looks only at this process's own folder, which ``open_checkpoints`` emptied."""
        restorer, saved, own = (_resume_from(self.checkpoint, self.state, self.manager, out_dir, backend) if resume
                                else (self.checkpoint, self.manager, True))
        try:
            step, data_restored = (_restore(restorer, self.state, saved, recipe, out_dir, self.data_saved and own)
                                   if saved.checkpoints else (0, False))
        except Exception:
            _check_agreement(backend, None, out_dir)  # the other workers stop too, rather than wait for this one
            raise
        _check_agreement(backend, step, out_dir)
        return step, data_restored


def open_checkpoints(state: dict[str, object], iterator: Iterator, out_dir: Path, backend: Backend, keep: int,
                     resume: bool) -> Checkpoints:
    """The checkpoints of ``state`` (model, optimizer, step) and of the input ``iterator`` where it can be saved,
    in this process's folder under ``out_dir``; without ``resume`` the earlier run's are removed first."""
    try:  # the input pipeline's position too, where the iterator can be saved
        checkpoint, data_saved = tf.train.Checkpoint(**state, data=iterator), True
    except ValueError:  # MultiWorkerMirroredStrategy's iterators cannot be
        checkpoint, data_saved = tf.train.Checkpoint(**state), False
    checkpoint_dir = _checkpoint_dir(out_dir, backend)
    if not resume and checkpoint_dir.is_dir():
        # Kept, a later resume (recipe.json is this run's now) would take the earlier run's weights for its own.
        log.warning("%s: --no-resume: removing the checkpoints of the earlier run", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=keep)
    return Checkpoints(checkpoint, state, manager, data_saved)


def scratch_dir(out_dir: Path, backend: Backend) -> Path:
    """Where a worker other than the chief saves: multi-worker saving is collective, so every worker takes
    part, but only the chief's checkpoints are the run's. Removed when training ends."""
    return out_dir / f".worker-{backend.worker}"


def _checkpoint_dir(out_dir: Path, backend: Backend) -> Path:
    return out_dir / CHECKPOINT_DIR if backend.is_chief else scratch_dir(out_dir, backend) / CHECKPOINT_DIR


def _check_recipe(recipe: Recipe, out_dir: Path) -> None:
    saved = out_dir / RECIPE_FILE
    if saved.is_file():
        changed = recipe.changed_from(Recipe.load(saved))
        if changed - {"train.steps", "train.time_budget_s"}:
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
