"""Typed settings: the one home of every hyper-parameter, with named presets.

``paper`` is the configuration of Shi, Bai and Yao (2015) with the Ascend reference's optimiser and is the
default for real runs. ``quick`` is a narrower network and a short schedule that trains on two CPU cores in
minutes (what ``make run`` uses); ``tiny`` exists for tests that only need real training steps.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crnn.charset import DEFAULT_CHARSET, Charset
from crnn.files import write_json

AUTO_PRECISION = "auto"  # the fastest of AUTO_CANDIDATES, measured where training starts (crnn.train.loop)
AUTO_CANDIDATES = ("float32", "mixed_bfloat16")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", AUTO_PRECISION)
DEVICES = ("cpu", "gpu", "npu")


@dataclass(frozen=True)
class ModelConfig:
    """The network. Shapes: input (height, width, channels), output (time steps, num_classes)."""

    height: int = 32
    width: int = 100
    channels: int = 1
    # The seven convolutions of the paper's VGG-style CNN.
    conv_filters: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512)
    lstm_units: int = 256
    # Each image standardised (zero mean, unit variance) before the CNN. Off in the paper's recipe, and for
    # a recipe saved before it existed, whose checkpoints were trained without it.
    standardise: bool = False
    charset: str = DEFAULT_CHARSET
    max_label_length: int = 25

    def __post_init__(self) -> None:
        if len(self.conv_filters) != 7:
            raise ValueError(f"conv_filters needs 7 sizes, got {len(self.conv_filters)}")
        if (self.height, self.width) != (32, 100):
            # The pooling plan collapses exactly 32 rows to one; other widths would change the time axis.
            raise ValueError(f"input must be 32 x 100, got {self.height} x {self.width}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (colour), got {self.channels}")
        if not 1 <= self.max_label_length <= self.time_steps:
            raise ValueError(f"max_label_length must be 1 to {self.time_steps} (the time steps), "
                             f"got {self.max_label_length}")

    @property
    def time_steps(self) -> int:
        """Width / 4 after two 2x2 poolings, +1 from each of the two padded 2x1 poolings, -1 from the last
        2x2 valid convolution: 26 for a width of 100."""
        return self.width // 4 + 1

    @property
    def num_classes(self) -> int:
        return Charset(self.charset).num_classes


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. The learning rate is per ``base_batch_size`` samples and scales linearly with the
    global batch (Goyal et al. 2017), so a recipe keeps its meaning across device counts."""

    batch_size: int = 64
    steps: int = 240_000
    learning_rate: float = 0.01
    base_batch_size: int = 64
    warmup_steps: int = 8000
    momentum: float = 0.9
    nesterov: bool = False
    clip_norm: float = 5.0
    weight_decay: float = 1e-4
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    log_every: int = 100
    shuffle_buffer: int = 10_000
    seed: int = 0
    precision: str = "float32"  # or mixed_bfloat16, mixed_float16 (with dynamic loss scaling), auto
    # Seconds the training steps may take: where ``steps`` would overrun it at the step time measured where
    # training starts, fewer are trained (``steps_within_budget``). None: ``steps``, however long they take.
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "log_every", "keep_checkpoints",
                     "base_batch_size", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be 0 to steps ({self.steps}), got {self.warmup_steps}")
        for name in ("learning_rate", "clip_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive (or None for no budget), got {self.time_budget_s}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"momentum must be in [0, 1) and weight_decay >= 0, got {self.momentum}, "
                             f"{self.weight_decay}")

    def scaled_learning_rate(self, global_batch: int) -> float:
        return self.learning_rate * global_batch / self.base_batch_size

    def steps_within_budget(self, step_ms: float) -> int:
        """The steps to train at ``step_ms`` a step: ``steps``, or as many whole logging windows as
        ``time_budget_s`` holds where that is fewer, but never fewer than the warm-up and one window."""
        if self.time_budget_s is None:
            return self.steps
        fitting = int(self.time_budget_s * 1000 / step_ms) // self.log_every * self.log_every
        return min(self.steps, max(fitting, self.warmup_steps + self.log_every))


RECIPE_FILE = "recipe.json"  # a saved Recipe, beside the checkpoints and in the export


@dataclass(frozen=True)
class Recipe:
    """A complete experiment: saved beside the checkpoints it produced."""

    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat_params(self) -> dict[str, Any]:
        """``model.lstm_units``-style keys, for MLflow params."""
        flat: dict[str, Any] = {"preset": self.preset}
        for section in ("model", "train"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[f"{section}.{key}"] = ",".join(map(str, value)) if isinstance(value, tuple) else value
        return flat

    def changed_from(self, other: Recipe) -> set[str]:
        """The ``flat_params`` keys whose values differ from ``other``'s."""
        mine = self.flat_params()
        return {key for key, value in other.flat_params().items() if mine.get(key) != value}

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        for section, config in (("model", ModelConfig), ("train", TrainConfig)):
            unknown = set(data.get(section, {})) - {f.name for f in dataclasses.fields(config)}
            if unknown:
                raise ValueError(f"unknown {section} setting(s): {', '.join(sorted(unknown))}")
        model = dict(data.get("model", {}))
        if "conv_filters" in model:
            model["conv_filters"] = tuple(model["conv_filters"])
        return cls(
            preset=data.get("preset", "custom"),
            model=ModelConfig(**model),
            train=TrainConfig(**data.get("train", {})),
        )

    @classmethod
    def load(cls, path: Path) -> Recipe:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err


# What a 10-minute `make run` leaves its training steps once downloading, converting, setting up, evaluating
# and registering have had their time, on the slower of the 2-core machines measured (docs/performance.md).
TIME_BUDGET_S = 340.0

PRESETS: dict[str, Recipe] = {
    "paper": Recipe(),
    "quick": Recipe(
        preset="quick",
        # Standardised images: better in-distribution accuracy in the same steps (docs/performance.md,
        # per-image standardisation). The first four convolutions, at the largest feature maps, are the step's
        # dearest part: half as wide, they buy twice the steps in the same time, which read better than the
        # wider network's fewer (docs/performance.md, the same run on another machine).
        model=ModelConfig(conv_filters=(16, 32, 64, 64, 128, 128, 128), lstm_units=128, standardise=True),
        train=TrainConfig(
            # At most 4,400 steps, and fewer where they would not fit the time that a 10-minute pipeline
            # leaves the training steps on this machine (machines differ: docs/performance.md).
            batch_size=64, steps=4400, time_budget_s=TIME_BUDGET_S, learning_rate=0.06, warmup_steps=100, nesterov=True,
            checkpoint_every=1100, log_every=25, shuffle_buffer=5000,
            # Mixed bfloat16 where this CPU runs it faster (AMX, AVX-512 BF16), at the accuracy of float32
            # (docs/performance.md, float32 against mixed bfloat16).
            precision=AUTO_PRECISION,
        ),
    ),
    "tiny": Recipe(
        preset="tiny",
        model=ModelConfig(conv_filters=(8, 16, 16, 16, 32, 32, 32), lstm_units=16, standardise=True),
        train=TrainConfig(
            batch_size=8, steps=6, learning_rate=0.01, warmup_steps=2,
            checkpoint_every=3, log_every=2, shuffle_buffer=64,
        ),
    ),
}
PIPELINE_PRESET = "quick"  # what the pipeline trains unless told: a run that ends in minutes on CPUs


def recipe_for(preset: str, **train_overrides: Any) -> Recipe:
    """A named preset with training settings overridden (``None`` values are ignored). Steps given are
    trained in full: they lift the preset's time budget unless one is given too."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    if "steps" in overrides:
        overrides.setdefault("time_budget_s", None)
    return dataclasses.replace(base, train=dataclasses.replace(base.train, **overrides))
