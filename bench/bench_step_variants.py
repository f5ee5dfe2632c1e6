"""Training-step variants on the ``quick`` preset (what ``make run`` trains), each against the default step in
the same run: XLA compilation, Keras' loop for the LSTMs (training on CPUs unrolls them), TensorFlow's thread
pools, the two replaced parts of the step (Keras' own batch normalisation instead of the fused kernel,
``tf.nn.ctc_loss`` on dense labels instead of the CTCLoss kernel on sparse ones), and the wider CNN the preset
had before.

Each variant runs in a fresh process (thread pools are fixed when TensorFlow starts), on one fixed synthetic
batch (``synthetic_features``: the loop's timing batch), with the loop's optimiser and CTC loss; the forward
pass, loss and gradients are one ``tf.function`` (``jit_compile=True`` in the ``xla`` variant), the clipping and
the update another. The variants run in rounds, interleaved, so that a burst of other work on a shared machine
falls on several of them; each figure is the best round's mean ms/step.

Usage: python bench/bench_step_variants.py [--precision mixed_bfloat16] [--rounds 2] [--steps 15]
       [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "default": {},
    # XLA has no form of the CTCLoss kernel: the compiled step takes the loss as it was, which XLA compiles.
    "xla": {"jit": True, "dense_ctc": True},
    "lstm_loop": {"unroll": False},  # Keras' loop over the time steps, which training on CPUs unrolls
    "one_inter_op_thread": {"env": {"TF_NUM_INTEROP_THREADS": "1"}},
    "one_intra_op_thread": {"env": {"TF_NUM_INTRAOP_THREADS": "1"}},
    "keras_batch_norm": {"keras_batch_norm": True},
    "dense_ctc": {"dense_ctc": True},
    "former_step": {"keras_batch_norm": True, "dense_ctc": True},  # both, as the step was before them
    "former_cnn": {"conv_filters": (32, 64, 128, 128, 192, 192, 192)},  # the quick preset's CNN until issue 24
}


def _dense_ctc_loss(labels, label_length, logits):
    """The loss as it was: ``tf.nn.ctc_loss`` on the dense labels (its own graph of ops over the time steps)."""
    import tensorflow as tf

    return tf.nn.ctc_loss(labels=tf.cast(labels, tf.int32), logits=logits, label_length=tf.cast(label_length, tf.int32),
                          logit_length=tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1]), logits_time_major=False,
                          blank_index=-1)


def measure_one(variant: str, precision: str, steps: int, warmup: int = 3) -> float:
    """Mean ms/step of ``variant`` in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from crnn.config import PRESETS
    from crnn.model.ctc import ctc_loss
    from crnn.model.network import GlobalBatchNormalization, build_crnn, training_unroll
    from crnn.train.loop import _optimizer, synthetic_features
    from crnn.train.schedule import WarmupCosine

    settings = VARIANTS[variant]
    if settings.get("keras_batch_norm"):  # as if replicas shared the batch: Keras' own normalisation
        GlobalBatchNormalization.own_batch_moments = lambda self: False
    loss_of = _dense_ctc_loss if settings.get("dense_ctc") else ctc_loss
    recipe = PRESETS["quick"]
    if "conv_filters" in settings:
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model,
                                                                       conv_filters=settings["conv_filters"]))
    keras.mixed_precision.set_global_policy(precision)
    model = build_crnn(recipe.model, unroll=settings.get("unroll", training_unroll("cpu")))
    cfg = recipe.train
    optimizer = _optimizer(recipe, WarmupCosine(cfg.learning_rate, 0, 10**9))
    features = synthetic_features(recipe.model, cfg.batch_size)
    images, labels, lengths = (tf.constant(features[k]) for k in ("image", "label", "label_length"))

    @tf.function(jit_compile=bool(settings.get("jit")))
    def gradients(images, labels, lengths):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(loss_of(labels, lengths, tf.cast(logits, tf.float32)))
        return loss, tape.gradient(loss, model.trainable_variables)

    @tf.function
    def step(images, labels, lengths):
        loss, grads = gradients(images, labels, lengths)
        grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
        optimizer.apply_gradients(list(zip(grads, model.trainable_variables, strict=True)))
        return loss

    for _ in range(warmup):
        float(step(images, labels, lengths))
    started = time.perf_counter()
    for _ in range(steps):
        float(step(images, labels, lengths))
    return 1000 * (time.perf_counter() - started) / steps


def _in_process(variant: str, precision: str, steps: int) -> float:
    env = {**os.environ, **VARIANTS[variant].get("env", {})}
    out = subprocess.run([sys.executable, __file__, "--one", variant, "--precision", precision, "--steps", str(steps)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a variant's own process
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    if args.one:
        print(measure_one(args.one, args.precision, args.steps))
        return
    best = {variant: float("inf") for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            best[variant] = min(best[variant], _in_process(variant, args.precision, args.steps))
    figures = {"precision": args.precision, "ms_per_step": best,
               "vs_default": {v: ms / best["default"] for v, ms in best.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_variants.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nquick preset, {args.precision}, batch 64, ms/step (best of {args.rounds} rounds)")
    for variant, ms in best.items():
        print(f"{variant:<24} {ms:>8.1f}   {ms / best['default']:>5.2f}x the default step")
    print(f"\nwritten to {args.out / 'step_variants.json'}")


if __name__ == "__main__":
    main()
