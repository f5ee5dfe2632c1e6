"""Training-step benchmark: images/s and achieved FLOP/s of one CRNN training step, against the machine's
matrix-multiply FLOP/s measured in the same run, on the same device, with the same thread settings.

What is measured, and why:

1. the model's forward FLOPs per image, counted analytically from its layers (Conv2D
   ``2 * H_out * W_out * K_h * K_w * C_in * C_out``, LSTM ``2 * 4 * (input + units) * units * timesteps`` per
   direction, Dense; batch norm, ReLU, pooling and the LSTM gates' element-wise work are left out) and
   cross-checked with TensorFlow's FLOP profiler on the forward graph of a copy of the model whose LSTMs are
   unrolled (TensorFlow's profiler does not look inside ``tf.while_loop``, which is how the LSTMs run). A
   training step is counted as 3 x the forward pass (forward, then gradients with respect to activations and
   to weights, each about as costly as the forward);
2. one training step, the training loop's own (``crnn.train.loop``: CTC loss, SGD with the recipe's momentum,
   weight decay and gradient clipping) on one fixed synthetic batch read from a repeated one-element dataset
   (random uint8 images, random labels of length 5 to 10), so the input pipeline is not measured; the
   loss is fetched after every step, as the training loop does;
3. the bound: ``tf.matmul`` of square matrices (float32, and the compute dtype of a mixed precision; on a GPU
   also bfloat16 and float16), repeated for about a second after a warm-up. The achieved training FLOP/s is
   reported as a fraction of the matmul FLOP/s of the dtype the model computes in (target 40 %). The matmul is
   measured before and after the training steps and the better of the two is the bound, so that a burst of
   other work on a shared machine lowers the bound less often than it lowers the training figure.

With ``--precision mixed_bfloat16`` or ``mixed_float16`` the Keras policy is set before the model is built,
the CTC loss is computed on float32 logits, and float16 wraps the optimiser in a ``LossScaleOptimizer``. On a
GPU the images/s are also compared with the 8,274 images/s MindOCR reports for CRNN on 8 Ascend cards.

Several ``--precision`` (by default float32 and mixed_bfloat16) are measured one after the other in one run and
printed side by side, with the validation accuracy each reaches in a short run of the quick preset through the
whole training loop on synthetic data (``--accuracy-steps``), so that a faster precision is seen at its accuracy.

Usage: python bench/bench_train.py [--precision float32|mixed_bfloat16|mixed_float16 ...] [--batch-size 64]
       [--steps 20] [--warmup 3] [--accuracy-steps 600] [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from crnn.config import PRESETS, ModelConfig, Recipe  # noqa: E402
from crnn.model.network import build_crnn, training_unroll  # noqa: E402
from crnn.train.devices import Backend  # noqa: E402
from crnn.train.loop import _optimizer, _step_function, synthetic_features  # noqa: E402
from crnn.train.schedule import WarmupCosine  # noqa: E402

TARGETS = {"of_matmul": 0.40}
MINDOCR_IMAGES_PER_SEC = 8274.0  # MindOCR's CRNN training throughput on 8 Ascend cards
MINDOCR_CARDS = 8
TRAINING_FORWARD_MULTIPLE = 3  # forward + grads w.r.t. activations + grads w.r.t. weights
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

Batch = tuple[tf.Tensor, tf.Tensor, tf.Tensor]


# ---------------------------------------------------------------------------------------------- FLOP counts

def _lstm_flops(lstm: layers.LSTM, input_shape: tuple) -> int:
    timesteps, features = int(input_shape[1]), int(input_shape[2])
    units = lstm.units
    return 2 * 4 * (features + units) * units * timesteps


def layer_forward_flops(layer: layers.Layer) -> int:
    """Multiply-adds x 2 of one layer for one sample; 0 for layers whose cost is negligible."""
    if isinstance(layer, layers.Conv2D):
        _, h_out, w_out, c_out = layer.output.shape
        k_h, k_w, c_in, _ = layer.kernel.shape
        return 2 * h_out * w_out * k_h * k_w * c_in * c_out
    if isinstance(layer, layers.Dense):
        rows = math.prod(layer.input.shape[1:-1])
        return 2 * rows * layer.kernel.shape[0] * layer.kernel.shape[1]
    if isinstance(layer, layers.Bidirectional):
        shape = tuple(layer.input.shape)
        return _lstm_flops(layer.forward_layer, shape) + _lstm_flops(layer.backward_layer, shape)
    if isinstance(layer, layers.LSTM):
        return _lstm_flops(layer, tuple(layer.input.shape))
    return 0


def analytic_forward_flops(model: keras.Model) -> dict[str, int]:
    """Forward FLOPs per image of each layer that counts, by layer name."""
    flops = {layer.name: layer_forward_flops(layer) for layer in model.layers}
    return {name: count for name, count in flops.items() if count}


def _unrolled(layer: layers.Layer) -> layers.Layer:
    """A fresh copy of ``layer``; LSTMs unrolled, so that their steps are ops of the graph, not of a loop."""
    config = layer.get_config()
    if isinstance(layer, layers.Bidirectional):
        for key in ("layer", "backward_layer"):
            if key in config:
                config[key]["config"]["unroll"] = True
    return layer.__class__.from_config(config)


def profiled_forward_flops(model: keras.Model, config: ModelConfig) -> dict[str, int]:
    """TensorFlow's profiler on the forward graph of one image, LSTMs unrolled: conv + matmul FLOPs and the
    total it counts (which also holds the element-wise ops it knows of)."""
    clone = keras.models.clone_model(model, clone_function=_unrolled)
    spec = tf.TensorSpec((1, config.height, config.width, config.channels), tf.uint8)
    graph = tf.function(lambda images: clone(images, training=False)).get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    root = tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options)
    counts, nodes = {}, list(root.children)
    while nodes:  # the op view is a chain: each node's own float_ops, and the rest below it
        node = nodes.pop()
        counts[node.name] = counts.get(node.name, 0) + node.float_ops
        nodes.extend(node.children)
    dense = sum(counts.get(op, 0) for op in ("Conv2D", "MatMul", "BatchMatMulV2", "Einsum"))
    return {"conv_matmul": int(dense), "all_ops": int(root.total_float_ops)}


# ------------------------------------------------------------------------------------------- device, bound

def device_and_name() -> tuple[str, str]:
    """(TensorFlow device, a readable name): the first GPU if there is one, else the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "/GPU:0", f"{details.get('device_name', 'GPU')} (1 of {len(gpus)} GPU)"
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "/CPU:0", f"{model}, {os.cpu_count()} cores"


def _sync(tensor: tf.Tensor) -> None:
    """Waits for ``tensor`` (and so for everything queued before it on the device)."""
    tf.reshape(tensor, [-1])[0].numpy()


def measure_matmuls(device: str, dtypes: list[str], size: int) -> dict[str, float]:
    """TFLOP/s of each dtype's matmul."""
    return {dtype: matmul_flops_per_sec(device, dtype, size) / 1e12 for dtype in dtypes}


def matmul_flops_per_sec(device: str, dtype: str, size: int, seconds: float = 1.0) -> float:
    """FLOP/s of ``size`` x ``size`` matmuls, repeated for about ``seconds`` after a warm-up."""
    with tf.device(device):
        a = tf.random.uniform((size, size), dtype=tf.float32)
        b = tf.random.uniform((size, size), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
        _sync(tf.matmul(a, b))  # warm-up: kernel selection, allocations
        started = time.perf_counter()
        _sync(tf.matmul(a, b))
        repeats = max(2, math.ceil(seconds / max(time.perf_counter() - started, 1e-6)))
        started = time.perf_counter()
        for _ in range(repeats):
            product = tf.matmul(a, b)
        _sync(product)
        elapsed = time.perf_counter() - started
    return 2 * size**3 * repeats / elapsed


# ------------------------------------------------------------------------------------------- training step

def synthetic_batch(config: ModelConfig, batch_size: int, device: str, seed: int = 0) -> Batch:
    """The training loop's timing batch (``synthetic_features``), placed on ``device``."""
    features = synthetic_features(config, batch_size, seed)
    with tf.device(device):
        return tuple(tf.identity(features[key]) for key in ("image", "label", "label_length"))


def make_train_step(model: keras.Model, recipe: Recipe, batch_size: int, precision: str, gpu: bool):
    """The training loop's own step and optimiser (``crnn.train.loop``) on one replica, at the recipe's peak
    learning rate; returns (the step, its optimiser)."""
    schedule = WarmupCosine(recipe.train.scaled_learning_rate(batch_size), 0, 10**9)
    optimizer = _optimizer(recipe, schedule, loss_scaling=precision == "mixed_float16")
    optimizer.build(model.trainable_variables)
    backend = Backend("gpu" if gpu else "cpu", tf.distribute.get_strategy(), 1)
    return _step_function(model, optimizer, backend, batch_size, recipe.train.clip_norm), optimizer


def batch_iterator(batch: Batch):
    """The same batch forever, in the ``({"image", "label", "label_length"}, text)`` form the step reads."""
    images, labels, lengths = batch
    features = {"image": images, "label": labels, "label_length": lengths}
    return iter(tf.data.Dataset.from_tensors((features, tf.zeros([tf.shape(images)[0]], tf.string))).repeat())


def time_steps(train_step: Callable, batch, warmup: int,
               steps: int) -> tuple[float, list[float]]:
    """(seconds of the warm-up steps, tracing included; seconds of each timed step). The loss is fetched
    after every step, as the training loop does, so each time is the whole step."""
    started = time.perf_counter()
    for _ in range(warmup):
        loss = float(train_step(batch))
    warmup_seconds = time.perf_counter() - started
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = float(train_step(batch))
        times.append(time.perf_counter() - started)
    if not math.isfinite(loss):
        raise RuntimeError(f"the loss is {loss} after {warmup + steps} steps")
    return warmup_seconds, times


# --------------------------------------------------------------------------------------------------- report

def print_table(figures: dict, gpu: bool) -> None:
    """The figures, with the target beside the one that has one."""
    f = figures
    dtype = f["compute_dtype"]
    print(f"\n{'figure':<48} {'value':>12} {'target':>8}")
    print(f"{'device':<48} {f['device_name']}")
    print(f"{'precision (compute dtype)':<48} {f['precision']} ({dtype})")
    print(f"{'threads (intra-op, inter-op; 0 = TF default)':<48} {f['intra_op_threads']:>6}, {f['inter_op_threads']}")
    print(f"{'load average (1 min) at start':<48} {f['load_average_1min_at_start']:>12.2f}")
    print(f"{'batch size':<48} {f['batch_size']:>12}")
    print(f"{'training throughput (images/s)':<48} {f['images_per_sec']:>12.1f}")
    print(f"{'  ms/step (mean of timed steps)':<48} {f['ms_per_step']:>12.1f}")
    print(f"{'forward GFLOP/image (analytic)':<48} {f['forward_gflop_per_image']:>12.3f}")
    print(f"{'  TF profiler, conv + matmul (LSTMs unrolled)':<48} {f['profiled_forward_gflop_per_image']:>12.3f}")
    print(f"{'  TF profiler, all ops it counts':<48} {f['profiled_all_ops_gflop_per_image']:>12.3f}")
    print(f"{f'training GFLOP/image (= {TRAINING_FORWARD_MULTIPLE} x forward)':<48} "
          f"{f['training_gflop_per_image']:>12.3f}")
    print(f"{'achieved training TFLOP/s':<48} {f['achieved_tflops']:>12.3f}")
    size = f["matmul_size"]
    for name, value in f["matmul_tflops"].items():
        print(f"{f'matmul {name} TFLOP/s ({size}^2, best of 2)':<48} {value:>12.3f}")
    print(f"{f'  achieved / matmul {dtype}':<48} {100 * f['of_matmul']:>11.1f}% "
          f"{100 * TARGETS['of_matmul']:>7.0f}%")
    if gpu:
        print(f"{'  vs MindOCR, 8 Ascend cards (8,274 images/s)':<48} {f['vs_mindocr_8_cards']:>11.2f}x")
        print(f"{'  vs MindOCR per card (1,034 images/s)':<48} {f['vs_mindocr_per_card']:>11.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", dest="precisions", action="append", choices=tuple(COMPUTE_DTYPE),
                        help="repeat to compare (default: float32 and mixed_bfloat16, side by side)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default=Recipe.preset)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing included)")
    parser.add_argument("--matmul-size", type=int, default=0, help="0: 2048 on a CPU, 8192 on a GPU")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for everything; 0: TF default")
    parser.add_argument("--accuracy-steps", type=int, default=600,
                        help="a short run of the quick preset per precision, on synthetic data, for the accuracy "
                             "each reaches (0: none)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    args.precisions = list(dict.fromkeys(args.precisions or ["float32", "mixed_bfloat16"]))
    if min(args.batch_size, args.steps) < 1 or min(args.warmup, args.accuracy_steps) < 0:
        parser.error("--batch-size and --steps must be at least 1, --warmup and --accuracy-steps at least 0")
    return args


def measure(precision: str, args: argparse.Namespace, device: str, device_name: str, gpu: bool) -> dict:
    """The figures of the training step in ``precision``: its throughput and FLOP/s against the matmul bound."""
    keras.mixed_precision.set_global_policy(precision)
    recipe = PRESETS[args.preset]
    keras.utils.set_random_seed(recipe.train.seed)
    clock = time.perf_counter()
    load = os.getloadavg()[0]

    with tf.device(device):
        model = build_crnn(recipe.model, unroll=training_unroll("gpu" if gpu else "cpu"))
        train_step, optimizer = make_train_step(model, recipe, args.batch_size, precision, gpu)
    per_layer = analytic_forward_flops(model)
    forward = sum(per_layer.values())
    profiled = profiled_forward_flops(model, recipe.model)
    print(f"{args.preset} model on {device_name}, {precision}: forward FLOPs per image by layer:")
    for name, count in per_layer.items():
        print(f"  {name:<12} {count / 1e6:>10.1f} MFLOP")

    compute_dtype = COMPUTE_DTYPE[precision]
    dtypes = list(dict.fromkeys(["float32", compute_dtype] + (["bfloat16", "float16"] if gpu else [])))
    size = args.matmul_size or (8192 if gpu else 2048)
    before = measure_matmuls(device, dtypes, size)

    batch = synthetic_batch(recipe.model, args.batch_size, device, recipe.train.seed)
    warmup_seconds, times = time_steps(train_step, batch_iterator(batch), args.warmup, args.steps)
    timed = sum(times)
    print(f"warm-up: {args.warmup} steps in {warmup_seconds:.1f} s (tracing included); timed: {args.steps} steps "
          f"in {timed:.1f} s, per step min {1000 * min(times):.1f} / median {1000 * statistics.median(times):.1f} "
          f"/ max {1000 * max(times):.1f} ms")

    after = measure_matmuls(device, dtypes, size)
    matmul = {dtype: max(before[dtype], after[dtype]) for dtype in dtypes}
    print(f"matmul TFLOP/s before / after the training steps ({size}^2, ~1 s each): "
          + ", ".join(f"{d} {before[d]:.3f} / {after[d]:.3f}" for d in dtypes))
    keras.mixed_precision.set_global_policy("float32")

    images_per_sec = args.batch_size * args.steps / timed
    achieved = TRAINING_FORWARD_MULTIPLE * forward * images_per_sec / 1e12
    return {
        "preset": args.preset, "precision": precision, "compute_dtype": compute_dtype,
        "device": device, "device_name": device_name,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tensor_float_32": bool(gpu and tf.config.experimental.tensor_float_32_execution_enabled()),
        "batch_size": args.batch_size, "warmup_steps": args.warmup, "steps": args.steps,
        "warmup_seconds": warmup_seconds, "step_seconds": times,
        "images_per_sec": images_per_sec, "ms_per_step": 1000 * timed / args.steps,
        "forward_flops_by_layer": per_layer,
        "forward_gflop_per_image": forward / 1e9,
        "profiled_forward_gflop_per_image": profiled["conv_matmul"] / 1e9,
        "profiled_all_ops_gflop_per_image": profiled["all_ops"] / 1e9,
        "training_flops_multiple_of_forward": TRAINING_FORWARD_MULTIPLE,
        "training_gflop_per_image": TRAINING_FORWARD_MULTIPLE * forward / 1e9,
        "achieved_tflops": achieved, "matmul_size": size, "matmul_tflops": matmul,
        "matmul_tflops_before": before, "matmul_tflops_after": after,
        "load_average_1min_at_start": load,
        "of_matmul": achieved / matmul[compute_dtype], "target_of_matmul": TARGETS["of_matmul"],
        "vs_mindocr_8_cards": images_per_sec / MINDOCR_IMAGES_PER_SEC if gpu else None,
        "vs_mindocr_per_card": images_per_sec / (MINDOCR_IMAGES_PER_SEC / MINDOCR_CARDS) if gpu else None,
        "seconds": time.perf_counter() - clock,
    }


def short_run_accuracies(precisions: list[str], steps: int, work: Path) -> dict[str, dict]:
    """The quick preset trained ``steps`` steps in each precision, through the whole training loop (input
    pipeline included), on the same synthetic data; its validation accuracy and its mean ms/step."""
    from crnn.config import recipe_for
    from crnn.train.loop import train_model

    settings = {"steps": steps, "warmup_steps": min(100, steps // 4), "log_every": max(1, steps // 4),
                "checkpoint_every": steps}
    raw, data = work / "raw", work / "data" / "mjsynth"
    if not (data / "val" / "manifest.json").is_file():  # the same commands as a user's, data made once
        samples = min(20_000, steps * PRESETS["quick"].train.batch_size)
        crnn = [sys.executable, "-m", "crnn.cli"]
        subprocess.run([*crnn, "download", "synthetic", "--out", str(raw), "--train-size", str(samples),
                        "--val-size", "500", "--test-size", "10"], check=True, capture_output=True)
        subprocess.run([*crnn, "convert", "--raw", str(raw), "--out", str(work / "data")], check=True,
                       capture_output=True)
    results = {}
    for precision in precisions:
        started = time.perf_counter()
        run = train_model(recipe_for("quick", precision=precision, **settings), data / "train",
                          work / f"train-{precision}", val_dir=data / "val", resume=False)
        seconds = time.perf_counter() - started
        results[precision] = {"val_accuracy": run.val_accuracy, "final_loss": run.final_loss,
                              "seconds": seconds, "steps": steps}
        print(f"short run, {precision}: {steps} steps in {seconds:.0f} s, validation accuracy "
              f"{100 * run.val_accuracy:.2f} %, last loss {run.final_loss:.3f}")
    return results


def print_comparison(figures: dict[str, dict], accuracies: dict[str, dict]) -> None:
    """The precisions side by side: the step's throughput, against the first, and the short run's accuracy."""
    first = next(iter(figures.values()))
    print(f"\n{'precision':<16} {'images/s':>10} {'ms/step':>9} {'vs ' + first['precision']:>18} "
          f"{'of matmul':>10} {'short-run accuracy':>19}")
    for precision, f in figures.items():
        accuracy = accuracies.get(precision, {}).get("val_accuracy")
        shown = f"{100 * accuracy:.2f} %" if accuracy is not None else "-"
        print(f"{precision:<16} {f['images_per_sec']:>10.1f} {f['ms_per_step']:>9.1f} "
              f"{f['images_per_sec'] / first['images_per_sec']:>17.2f}x {100 * f['of_matmul']:>9.1f}% {shown:>19}")


def main() -> None:
    args = parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    device, device_name = device_and_name()
    gpu = device.startswith("/GPU")
    clock = time.perf_counter()
    figures = {precision: measure(precision, args, device, device_name, gpu) for precision in args.precisions}
    for one in figures.values():
        print_table(one, gpu)
    args.out.mkdir(parents=True, exist_ok=True)
    accuracies = (short_run_accuracies(args.precisions, args.accuracy_steps, args.out / "short-run")
                  if args.accuracy_steps else {})
    print_comparison(figures, accuracies)
    report = {"precisions": figures, "short_run": accuracies, "total_seconds": time.perf_counter() - clock}
    (args.out / "train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out / 'train.json'} ({report['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
