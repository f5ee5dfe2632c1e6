"""One worker of a multi-worker training run: ``TF_CONFIG`` in the environment names the cluster.

Trains the tiny preset with the real training loop on ``MultiWorkerMirroredStrategy`` and saves this
worker's final weights to ``OUT/weights-<worker>.npz`` for the test to compare.
"""

import logging
import sys
from pathlib import Path

import numpy as np

from crnn.config import recipe_for
from crnn.train.devices import make_backend
from crnn.train.loop import train_model


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # "resumed from ..." for the test
    data_dir, out_dir, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    backend = make_backend("cpu", 1)
    print(f"worker {backend.worker} of {backend.workers}: {backend.replicas} replicas", flush=True)
    result = train_model(recipe_for("tiny", steps=steps, checkpoint_every=2, log_every=1), data_dir, out_dir,
                         backend=backend)
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(result.model.get_weights())}
    np.savez(out_dir / f"weights-{backend.worker}.npz", **weights)
    print(f"trained to step {result.steps}", flush=True)


if __name__ == "__main__":
    main()
