"""Synthetic rendering: the MJSynth-recipe engine (``crnn.data.synth``) against the renderer it replaced, per
image, in the same run.

The baseline is ``crnn/data/render.py`` as it was at commit ``BASELINE_COMMIT`` (fonts from matplotlib, flat
colours, a tilt, blur and noise), read from this repository's history with ``git show`` and timed drawing its
own words. The engine is timed in one process (its per-image cost) and as the download step runs it, one
process per core (``crnn.data.synthetic``, wall time per image). Each figure is the best of ``--repeats``
rounds of ``--images`` images after a warm-up round, so fonts are loaded and the lexicon read before timing.

Usage: python bench/bench_render.py [--images 2000] [--repeats 3] [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from crnn.data import synthetic
from crnn.data.synth.render import draw_word
from crnn.data.synth.splits import TRAIN

BASELINE_COMMIT = "1232447"  # the last commit with the flat-colour renderer


def _baseline_renderer():
    """The replaced module, or None where this is not a git checkout holding that commit."""
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:crnn/data/render.py"], check=True,
                                capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="bench-render-")) / "baseline_render.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_render", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _best_ms(render_all, images: int, repeats: int) -> float:
    render_all(0, min(images, 500))  # warm-up: fonts, lexicon, worker start-up are not per-image costs
    best = float("inf")
    for round_ in range(1, repeats + 1):
        started = time.perf_counter()
        render_all(round_, images)
        best = min(best, (time.perf_counter() - started) / images * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()

    def engine(round_: int, count: int) -> None:
        for i in range(count):
            draw_word(TRAIN, np.random.default_rng([round_, 1, i]), bend=True)  # as the training images

    figures = {"images": args.images, "cores": len(os.sched_getaffinity(0))}
    figures["engine_ms"] = _best_ms(engine, args.images, args.repeats)
    # The download step's pool, started once (its start-up is paid once per dataset, not per image).
    with synthetic._renderer(synthetic._PARALLEL_FROM) as render:
        def engine_every_core(round_: int, count: int) -> None:
            list(render(partial(synthetic._word_image, round_, 1, TRAIN, True), range(count)))

        figures["engine_every_core_ms"] = _best_ms(engine_every_core, args.images, args.repeats)
    baseline = _baseline_renderer()
    if baseline is not None:
        def replaced(round_: int, count: int) -> None:
            for i in range(count):
                rng = np.random.default_rng([round_, 1, i])
                baseline.render_word(baseline.random_word(rng), rng)

        figures["baseline_ms"] = _best_ms(replaced, args.images, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "render.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{args.images} word images, {figures['cores']} cores, ms per image (best of {args.repeats})")
    print(f"{'engine, one process':<52} {figures['engine_ms']:>8.3f}")
    print(f"{'engine, one process per core (the download step)':<52} {figures['engine_every_core_ms']:>8.3f}")
    if baseline is None:
        print(f"baseline: commit {BASELINE_COMMIT} is not in this checkout's history; no ratio")
    else:
        print(f"{f'replaced renderer ({BASELINE_COMMIT}), one process':<52} {figures['baseline_ms']:>8.3f}")
        print(f"{'  engine, one process / replaced (above 1: slower)':<52} "
              f"{figures['engine_ms'] / figures['baseline_ms']:>7.2f}x")
        print(f"{'  download step / replaced (above 1: slower)':<52} "
              f"{figures['engine_every_core_ms'] / figures['baseline_ms']:>7.2f}x")
    print(f"\nwritten to {args.out / 'render.json'}")


if __name__ == "__main__":
    main()
