"""Three training steps of the recipe from fixed weights on fixed batches, on whichever stack runs this (Keras 3
here, tf.keras 2.6 in the ascend image): SGD with Nesterov momentum, decoupled weight decay, warmup, clipping.
Writes the weights before (start/) and after them (end/), by layer name, to the .npz its second argument names."""

import sys

import numpy as np
import tensorflow as tf

from crnn import keras_compat
from crnn.config import recipe_for
from crnn.data.input_pipeline import make_dataset
from crnn.model.network import build_crnn
from crnn.train.devices import Backend
from crnn.train.loop import _optimizer, _step_function
from crnn.train.schedule import WarmupCosine

BATCH, STEPS = 16, 3
data_dir, out = sys.argv[1], sys.argv[2]
# A weight decay large enough that getting it wrong would show beyond the stacks' float differences.
recipe = recipe_for("tiny", batch_size=BATCH, learning_rate=0.05, weight_decay=0.5, nesterov=True)
backend = Backend("cpu", tf.distribute.get_strategy(), 1)
model = build_crnn(recipe.model)
rng = np.random.default_rng(0)
for layer in model.layers:  # layer by layer: the stacks order a model's whole weight list differently
    layer.set_weights([w if np.all(w == w.flat[0]) else rng.normal(0, 0.1, w.shape).astype(w.dtype)
                       for w in layer.get_weights()])
start = {f"start/{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
optimizer = _optimizer(recipe, WarmupCosine(recipe.train.scaled_learning_rate(BATCH), 1, 100))
keras_compat.build_optimizer(optimizer, model.trainable_variables)
batches = make_dataset(data_dir, recipe.model, BATCH, training=False).take(STEPS)
iterator = iter(backend.strategy.experimental_distribute_dataset(batches))
step = _step_function(model, optimizer, backend, BATCH, recipe.train.clip_norm)
for _ in range(STEPS):
    step(iterator)
end = {f"end/{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
np.savez(out, **start, **end)
