"""Training-step variants on the ``quick`` preset (what ``make run`` trains), each against the default step in
the same run: XLA compilation, Keras' loop for the LSTMs (training on CPUs unrolls them), TensorFlow's thread
pools, the two replaced parts of the step (Keras' own batch normalisation instead of the fused kernel,
``tf.nn.ctc_loss`` on dense labels instead of the CTCLoss kernel on sparse ones), the wider CNN the preset
had before, and the recurrent layers: TensorFlow's fused LSTM kernel in place of Keras' LSTMs, or one
bidirectional LSTM instead of the paper's two.

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
    "block_lstm": {"recurrent": "block_lstm"},  # each direction one BlockLSTM op over all time steps
    "one_bilstm": {"recurrent": "one_bilstm"},  # the second bidirectional LSTM left out
}


def _block_bidirectional_lstm(units: int, name: str):
    """Both directions of a bidirectional LSTM, each one call of TensorFlow's fused CPU kernel (``BlockLSTM``,
    float32 only) over all time steps, with Keras' variables. ``BlockLSTMV2`` would take Keras' gate order
    as it is, but its registered gradient is wrong in TensorFlow 2.21 (docs/performance.md)."""
    import keras
    import tensorflow as tf

    class BlockBidirectionalLSTM(keras.layers.Layer):
        def build(self, shape):
            self.directions = [[self.add_weight(name=f"{d}_{w}", shape=s) for w, s in
                                (("kernel", (shape[-1], 4 * units)), ("recurrent_kernel", (units, 4 * units)),
                                 ("bias", (4 * units,)))] for d in ("forward", "backward")]

        def call(self, x, mask=None):  # the clone calls it as Bidirectional was called: with no mask
            time_major = tf.transpose(tf.cast(x, tf.float32), [1, 0, 2])
            zeros, no_peephole = tf.zeros([tf.shape(x)[0], units]), tf.zeros([units])

            def icfo(m):  # Keras' gates are i, f, c, o; BlockLSTM's i, c, f, o
                return tf.concat([m[..., :units], m[..., 2 * units:3 * units], m[..., units:2 * units],
                                  m[..., 3 * units:]], -1)

            outputs = []
            for (kernel, recurrent, bias), backwards in zip(self.directions, (False, True), strict=True):
                seq = tf.reverse(time_major, [0]) if backwards else time_major
                weights = tf.concat([tf.cast(kernel, tf.float32), tf.cast(recurrent, tf.float32)], 0)
                h = tf.raw_ops.BlockLSTM(seq_len_max=tf.cast(tf.shape(seq)[0], tf.int64), x=seq, cs_prev=zeros,
                                         h_prev=zeros, w=icfo(weights), wci=no_peephole, wcf=no_peephole,
                                         wco=no_peephole, b=icfo(tf.cast(bias, tf.float32)), forget_bias=0.0,
                                         use_peephole=False)[6]
                outputs.append(tf.reverse(h, [0]) if backwards else h)
            return tf.cast(tf.transpose(tf.concat(outputs, -1), [1, 0, 2]), self.compute_dtype)

    return BlockBidirectionalLSTM(name=name)


def _recurrent_swapped(model, how: str):
    """``model`` with its bidirectional LSTMs replaced (``block_lstm``), or without its second one (its own
    layers, the logits read from the first)."""
    import keras

    if how == "one_bilstm":
        return keras.Model(model.input, model.get_layer("logits")(model.get_layer("bilstm0").output))

    def clone(layer):
        if layer.name.startswith("bilstm"):
            return _block_bidirectional_lstm(layer.forward_layer.units, layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


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
    if "recurrent" in settings:
        model = _recurrent_swapped(model, settings["recurrent"])
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
