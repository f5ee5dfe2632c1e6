"""The one place where the two Keras the library trains on differ.

- Keras 3 on TensorFlow 2.21: the main stack (the cpu and gpu images).
- tf.keras 2.6 on TensorFlow 2.6.5, Python 3.9: Ascend's stack, the one CANN's TensorFlow adapter (``npu_device``)
  is built for (the ascend image).

Everything else, the network, the training step, the checkpoints and the export, is written once against what
this module gives. The main stack's ``load_for_serving`` reads either stack's export (the cpu image evaluates,
registers and serves what the ascend image trained).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from crnn.model.export import MODEL_FILE, WEIGHTS_FILE, saved_model_file

# TensorFlow 2.16 made tf.keras Keras 3; before it, tf.keras is the Keras 2 that TensorFlow's version pins.
KERAS_2 = tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16)

if KERAS_2:
    keras = tf.keras
else:
    import keras


def register_serializable(cls: type) -> type:
    """Registers a layer class under ``crnn>``, so that a saved model that holds it loads again."""
    register = keras.utils.register_keras_serializable if KERAS_2 else keras.saving.register_keras_serializable
    return register(package="crnn")(cls)


class MomentsBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation whose training statistics come from ``batch_moments``, which a subclass defines.
    Where those are this batch's own (``own_batch_moments``), Keras 3 trains through TensorFlow's fused kernel:
    one op forward and one backward where Keras' own normalisation makes a dozen, and casts every bfloat16
    activation to float32 (``make bench-train``'s ``keras_batch_norm`` variant times the difference)."""

    def __init__(self, **kwargs: Any):
        if KERAS_2:  # tf.keras 2.6's fused kernel computes the moments itself, without asking the layer
            kwargs["fused"] = False
        super().__init__(**kwargs)

    def batch_moments(self, inputs: tf.Tensor, axes: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def own_batch_moments(self) -> bool:
        """Whether ``batch_moments`` gives the moments of the batch this layer sees, as the fused kernel does."""
        return False

    if KERAS_2:
        def _calculate_mean_and_var(self, inputs, reduction_axes, keep_dims):
            mean, variance = self.batch_moments(inputs, list(reduction_axes))
            if keep_dims:
                for axis in sorted(reduction_axes):
                    mean, variance = tf.expand_dims(mean, axis), tf.expand_dims(variance, axis)
            return mean, variance
    else:
        def _moments(self, inputs, mask):
            if mask is not None:  # Keras' masked moments are this replica's own; this model passes no mask
                return super()._moments(inputs, mask)
            return self.batch_moments(inputs, self._reduction_axes)

        def call(self, inputs, training=None, mask=None):
            if training and self.trainable and mask is None and self._fusable(inputs) and self.own_batch_moments():
                return self._fused_training_call(inputs)
            return super().call(inputs, training=training, mask=mask)

        def _fusable(self, inputs: tf.Tensor) -> bool:
            # The kernel normalises NHWC images over their last axis, and cannot go below its epsilon.
            return (len(inputs.shape) == 4 and self.axis in (-1, 3) and not self.renorm
                    and self.epsilon >= _FUSED_MIN_EPSILON and inputs.dtype in (tf.float32, tf.bfloat16))

        def _fused_training_call(self, inputs: tf.Tensor) -> tf.Tensor:
            """Keras' training-mode ``call``, the moving statistics updated alike, in TensorFlow's fused kernel."""
            channels = inputs.shape[-1]
            gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
            beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
            # The kernel gives the sample variance (over n - 1); Keras keeps the population's (over n).
            count = tf.cast(tf.size(inputs) // channels, tf.float32)
            variance = variance * (count - 1.0) / count
            for statistic, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                statistic.assign(statistic * self.momentum + value * (1.0 - self.momentum))
            return tf.cast(outputs, self.compute_dtype)


_FUSED_MIN_EPSILON = 1.001e-5  # tf.compat.v1.nn.fused_batch_norm raises a smaller epsilon to this


def dtype_policy() -> str:
    """The name of the global dtype policy."""
    return (keras.mixed_precision.global_policy() if KERAS_2 else keras.mixed_precision.dtype_policy()).name


def set_dtype_policy(name: str) -> None:
    (keras.mixed_precision.set_global_policy if KERAS_2 else keras.mixed_precision.set_dtype_policy)(name)


def set_random_seed(seed: int) -> None:
    """Python's, NumPy's and TensorFlow's generators (tf.keras 2.6 predates keras.utils.set_random_seed)."""
    if not KERAS_2:
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


if KERAS_2:
    @keras.utils.register_keras_serializable(package="crnn")
    class _SGDWithWeightDecay(keras.optimizers.SGD):
        """tf.keras 2.6's SGD with Keras 3's decoupled weight decay: each variable shrinks by
        ``learning_rate x weight_decay`` of itself before its update, in the step that applies one (not in one a
        loss-scale optimiser skips). Ours, not tensorflow-addons' SGDW: that one shrinks by ``weight_decay``
        alone, not times the learning rate as Keras 3 does, and Ascend's image does not hold it."""

        def __init__(self, weight_decay: float = 0.0, **kwargs: Any):
            super().__init__(**kwargs)
            self.weight_decay = float(weight_decay)

        def _resource_apply_dense(self, grad, var, apply_state=None):
            if self.weight_decay:
                device, dtype = var.device, var.dtype.base_dtype
                coefficients = ((apply_state or {}).get((device, dtype))
                                or self._fallback_apply_state(device, dtype))
                var.assign_sub(var * coefficients["lr_t"] * self.weight_decay)
            return super()._resource_apply_dense(grad, var, apply_state)

        def get_config(self) -> dict:
            return {**super().get_config(), "weight_decay": self.weight_decay}


def sgd(learning_rate: Any, momentum: float, nesterov: bool, weight_decay: float) -> Any:
    """SGD with momentum and decoupled weight decay (none for 0)."""
    if KERAS_2:
        return _SGDWithWeightDecay(weight_decay, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay or None)


def with_loss_scaling(optimizer: Any, wrapper: Callable[[Any], Any] | None = None) -> Any:
    """``optimizer`` with dynamic loss scaling: Keras' own, or ``wrapper`` where the device needs its own (the
    Ascend adapter's ``NpuLossScaleOptimizer``, a tf.keras 2.6 ``LossScaleOptimizer`` that reads the NPU's float
    status, because an NPU saturates an overflow instead of giving Inf)."""
    if wrapper is not None:
        return wrapper(optimizer)
    if KERAS_2:
        return keras.mixed_precision.LossScaleOptimizer(optimizer)
    return keras.optimizers.LossScaleOptimizer(optimizer)


def _scales_loss(optimizer: Any) -> bool:
    return isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer if KERAS_2
                      else keras.optimizers.LossScaleOptimizer)


def scale_loss(optimizer: Any, loss: tf.Tensor) -> tf.Tensor:
    """The loss to take the gradient of: times the loss scale where the optimiser has one."""
    if not KERAS_2:
        return optimizer.scale_loss(loss)
    return optimizer.get_scaled_loss(loss) if _scales_loss(optimizer) else loss


def gradients_to_apply(optimizer: Any, grads: list[tf.Tensor]) -> tuple[list[tf.Tensor], Any]:
    """The gradients of the scaled loss as ``apply_gradients`` takes them, and the scale they still carry:
    Keras 3's loss-scale optimiser unscales them itself (and checks them) as it applies them, tf.keras 2.6's
    must be handed them unscaled."""
    if not _scales_loss(optimizer):
        return grads, 1.0
    if KERAS_2:
        return optimizer.get_unscaled_gradients(grads), 1.0
    return grads, optimizer.dynamic_scale


def build_optimizer(optimizer: Any, variables: list[tf.Variable]) -> None:
    """Creates the optimiser's own variables (momentum, step count) for ``variables`` now, before any step, so
    that a checkpoint restores them and a broadcast reaches them."""
    if KERAS_2:
        optimizer._create_all_weights(variables)  # tf.keras 2.6 has no public way; OptimizerV2's own
    else:
        optimizer.build(variables)


def optimizer_variables(optimizer: Any) -> list[tf.Variable]:
    return list(optimizer.variables() if KERAS_2 else optimizer.variables)


def save_for_serving(model: Any, folder: Path) -> Path:
    """Writes the served model into ``folder``: the whole model (Keras 3); its weights (tf.keras 2.6 cannot write
    Keras 3's format, and Keras 3 cannot rebuild a tf.keras 2.6 model from its saved configuration, its
    Bidirectional LSTM, but reads its HDF5 weights by layer name)."""
    if KERAS_2:
        model.save_weights(str(folder / WEIGHTS_FILE))
        return folder / WEIGHTS_FILE
    model.save(folder / MODEL_FILE)
    return folder / MODEL_FILE


def load_for_serving(folder: Path, build: Callable[[], Any]) -> Any:
    """The model exported to ``folder``: loaded whole, or ``build()`` given the saved weights."""
    path = saved_model_file(folder)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {MODEL_FILE} or {WEIGHTS_FILE}; is this an exported CRNN model?")
    if path.name == MODEL_FILE:
        return keras.models.load_model(path, compile=False)
    model = build()
    model.load_weights(str(path))
    return model
