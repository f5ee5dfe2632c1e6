import json

import pytest

from crnn.config import recipe_for
from crnn.evaluate.benchmark import evaluate_dataset
from crnn.model.export import Recognizer
from crnn.tracking import StepRun
from crnn.train.loop import train_model
from crnn.train.schedule import WarmupCosine


def test_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = WarmupCosine(peak=0.1, warmup_steps=10, total_steps=110)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(9)) == pytest.approx(0.1)
    assert float(schedule(60)) == pytest.approx(0.05, abs=1e-6)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_tiny_training_checkpoints_exports_and_reads(trained_dir, converted_dir):
    recipe = recipe_for("tiny")
    checkpoints = sorted(p.name for p in (trained_dir / "checkpoints").glob("ckpt-*.index"))
    assert checkpoints == ["ckpt-3.index", "ckpt-6.index"]
    assert json.loads((trained_dir / "recipe.json").read_text())["preset"] == "tiny"
    recognizer = Recognizer(trained_dir / "export")
    assert recognizer.recipe == recipe
    result = evaluate_dataset(recognizer.model, converted_dir / "IC13" / "test", recipe.model)
    assert result.score.num_samples == 12
    assert len(result.predictions) == 12 and result.images_per_sec > 0


def test_resume_continues_the_step_counter_and_schedule(converted_dir, tmp_path):
    data = converted_dir / "mjsynth" / "train"
    first = train_model(recipe_for("tiny", steps=4, checkpoint_every=2, log_every=1), data, tmp_path)
    assert first.steps == 4
    run = RecordingRun()
    resumed = train_model(recipe_for("tiny", steps=6, checkpoint_every=2, log_every=1), data, tmp_path, run=run)
    assert resumed.steps == 6
    assert [step for step, _ in run.metrics] == [5, 6]  # only the missing steps ran
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == [
        "ckpt-2.index", "ckpt-4.index", "ckpt-6.index"]

    run = RecordingRun()
    fresh = train_model(recipe_for("tiny", steps=2, checkpoint_every=2, log_every=1), data, tmp_path, run=run,
                        resume=False)
    assert fresh.steps == 2 and [step for step, _ in run.metrics] == [1, 2]
    # The earlier run's checkpoints went with --no-resume: a later resume cannot take them for this recipe's.
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-2.index"]


def test_no_readable_checkpoint_stops_the_run_instead_of_starting_over(converted_dir, tmp_path):
    data = converted_dir / "mjsynth" / "train"
    train_model(recipe_for("tiny", steps=4, checkpoint_every=2), data, tmp_path)
    for shard in (tmp_path / "checkpoints").glob("ckpt-*.data-*"):
        shard.write_bytes(b"\0" * shard.stat().st_size)
    with pytest.raises(ValueError, match="none of its checkpoints could be read.*--no-resume"):
        train_model(recipe_for("tiny", steps=6, checkpoint_every=2), data, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]


def test_resume_refuses_another_recipe_or_a_finished_run(converted_dir, tmp_path):
    data = converted_dir / "mjsynth" / "train"
    train_model(recipe_for("tiny", steps=4, checkpoint_every=2), data, tmp_path)
    with pytest.raises(ValueError, match="different recipe.*train.learning_rate"):
        train_model(recipe_for("tiny", steps=6, learning_rate=0.5), data, tmp_path)
    with pytest.raises(ValueError, match="ckpt-4 is at step 4, past the 3 steps"):
        train_model(recipe_for("tiny", steps=3, checkpoint_every=2), data, tmp_path)


class RecordingRun(StepRun):
    """Keeps what training logs, as MLflow would receive it."""

    def __init__(self):
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step=None, **linked):
        self.metrics.append((step, dict(metrics)))

    def log_params(self, params):
        self.params = getattr(self, "params", {}) | dict(params)

    def set_tags(self, tags):
        self.tags = getattr(self, "tags", {}) | dict(tags)


def test_training_reduces_the_loss_and_logs_every_n_steps(converted_dir, tmp_path):
    recipe = recipe_for("tiny", steps=60, learning_rate=0.05, log_every=10, warmup_steps=5)
    run = RecordingRun()
    train_model(recipe, converted_dir / "mjsynth" / "train", tmp_path, run=run)
    assert [step for step, _ in run.metrics] == [10, 20, 30, 40, 50, 60]
    # One replica: no images_per_sec_per_replica, which would repeat images_per_sec as another chart.
    assert set(run.metrics[0][1]) == {"loss", "learning_rate", "step_time_ms", "step_time_ms_p50",
                                      "step_time_ms_p95", "images_per_sec"}
    window = run.metrics[0][1]
    assert window["step_time_ms_p50"] <= window["step_time_ms_p95"]
    first, last = run.metrics[0][1]["loss"], run.metrics[-1][1]["loss"]
    assert last < 0.8 * first


def test_validation_is_a_curve_at_each_checkpoint(converted_dir, tmp_path):
    """val_accuracy, val_ned and val_loss at every checkpoint and at the end, not one point at the last step."""
    recipe = recipe_for("tiny", steps=6, checkpoint_every=2, log_every=2)
    run = RecordingRun()
    train_model(recipe, converted_dir / "mjsynth" / "train", tmp_path, val_dir=converted_dir / "mjsynth" / "val",
                run=run)
    points = [step for step, values in run.metrics if "val_accuracy" in values]
    assert points == [2, 4, 6]
    validation = [values for _, values in run.metrics if "val_accuracy" in values]
    assert all("val_ned" in values and values["val_loss"] > 0 for values in validation)
    assert validation[-1]["val_loss"] < validation[0]["val_loss"]  # the curve a reviewer looks for


def test_auto_precision_is_the_fastest_measured_here_and_says_so(converted_dir, tmp_path):
    """``auto`` (the quick preset's): float32 and mixed bfloat16 each timed on a few steps where training starts,
    the faster trains, and the run records which and why; off one CPU replica, float32 untimed."""
    import tensorflow as tf

    from crnn.config import AUTO_CANDIDATES, PRESETS
    from crnn.train.devices import Backend
    from crnn.train.loop import _resolved_precision

    assert PRESETS["quick"].train.precision == "auto" and PRESETS["paper"].train.precision == "float32"
    run = RecordingRun()
    result = train_model(recipe_for("tiny", steps=2, precision="auto"), converted_dir / "mjsynth" / "train",
                         tmp_path, run=run)
    probe = {key: float(value) for key, value in run.params.items() if key.startswith("precision_probe_ms/")}
    assert set(probe) == {f"precision_probe_ms/{name}" for name in AUTO_CANDIDATES}
    # The faster, to the tenth of a millisecond the parameters keep.
    assert probe[f"precision_probe_ms/{run.tags['crnn.precision']}"] <= min(probe.values()) + 0.05
    assert not [values for _, values in run.metrics if "precision_probe_ms/float32" in values]  # no lone points
    assert result.steps == 2
    elsewhere = RecordingRun()
    npu = Backend("npu", tf.distribute.get_strategy(), 1)
    assert _resolved_precision(recipe_for("tiny", precision="auto"), npu, elsewhere) == ("float32", None)
    assert elsewhere.tags == {"crnn.precision": "float32"} and elsewhere.metrics == []


def test_a_time_budget_trains_the_steps_it_holds_here_and_a_resume_keeps_them(converted_dir, tmp_path,
                                                                             monkeypatch):
    """The quick preset's budget: the step is timed where training starts, and the steps are cut to what the
    budget holds at that time; the run records both. A resumed run keeps the steps it chose, untimed."""
    from crnn.config import PRESETS
    from crnn.train import loop

    assert PRESETS["quick"].train.time_budget_s is not None and PRESETS["paper"].train.time_budget_s is None
    data = converted_dir / "mjsynth" / "train"
    timed = []
    real_step_ms = loop._step_ms

    def step_ms(*args, **kwargs):
        timed.append(real_step_ms(*args, **kwargs))
        return 100.0  # so that the steps follow from the budget whatever this machine's speed

    monkeypatch.setattr(loop, "_step_ms", step_ms)
    # 0.8 s at 100 ms a step: 8 steps, whole windows of 2; at most 20.
    recipe = recipe_for("tiny", steps=20, checkpoint_every=4, log_every=2, time_budget_s=0.8)
    run = RecordingRun()
    first = train_model(recipe, data, tmp_path, run=run)
    assert len(timed) == 1 and timed[0] > 0
    assert first.steps == 8 and run.params["train.steps"] == 8 and run.params["time_budget_step_ms"] == "100.0"
    assert [step for step, values in run.metrics if "loss" in values][-1] == 8

    monkeypatch.setattr(loop, "_step_ms", lambda *a, **k: pytest.fail("a resumed run timed its step again"))
    (tmp_path / "checkpoints" / "ckpt-8.index").unlink()  # killed after its checkpoint at step 4
    run = RecordingRun()
    resumed = train_model(recipe, data, tmp_path, run=run)
    assert resumed.steps == 8 and run.params["train.steps"] == 8
    assert [step for step, values in run.metrics if "loss" in values] == [6, 8]
