"""One process per rank: start them, prefix or log their output, wait, stop them all when one fails, and pass
SIGTERM/SIGINT on to them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from crnn.train.ascend.context import NpuContext

log = logging.getLogger(__package__)  # one logger for the whole launcher

GRACE_S = 10.0

_output_lock = threading.Lock()


@dataclass
class _Rank:
    label: str
    process: subprocess.Popen
    log_file: IO[bytes] | None = None
    pump: threading.Thread | None = None


def launch(command: Sequence[str], envs: Sequence[Mapping[str, str]], log_dir: Path | None = None,
           grace_s: float = GRACE_S) -> int:
    """Run ``command`` once per environment and wait: 0 when every rank succeeds, else the first failure's code.

    A rank killed by signal N counts as exit code 128 + N, as in a shell.
    """
    if not command:
        raise ValueError("no command to launch")
    if not envs:
        raise ValueError("no ranks to launch")
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    ranks: list[_Rank] = []
    # Forward signals before the first rank starts: each rank has its own session, so a SIGTERM that killed the
    # launcher mid-start would leave the ranks started so far running.
    with _forwarding_signals(ranks):
        try:
            for index, env in enumerate(envs):
                ranks.append(_start(list(command), dict(env), _label(env, index), log_dir))
            log.info("started %d rank(s): %s", len(ranks), " ".join(command))
            return _wait(ranks, grace_s)
        finally:
            _stop(ranks, grace_s)  # a no-op unless starting or waiting failed (e.g. the command does not exist)
            _close(ranks)


def _label(env: Mapping[str, str], index: int) -> str:
    """The rank's number in the whole group, as the rank itself reckons it (``NpuContext``): under the operator's
    CM_* variables too, so that the pods of one job, logging into one shared folder, name their logs apart."""
    try:
        return str(NpuContext.from_env(env).rank)
    except ValueError:  # the rank itself will say what is wrong
        return str(index)


def _start(command: list[str], env: dict[str, str], label: str, log_dir: Path | None) -> _Rank:
    # Own session per rank: Ctrl-C at a terminal reaches the ranks once (forwarded by us), and stopping a rank can
    # signal its whole process group, helpers included.
    options = {"env": env, "stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "start_new_session": True}
    if log_dir is None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, **options)
        pump = threading.Thread(target=_prefix_lines, args=(process.stdout, f"[rank {label}] "), daemon=True)
        pump.start()
        return _Rank(label, process, pump=pump)
    log_file = (log_dir / f"rank-{label}.log").open("wb")
    try:
        return _Rank(label, subprocess.Popen(command, stdout=log_file, **options), log_file=log_file)
    except BaseException:
        log_file.close()
        raise


def _prefix_lines(stream: IO[bytes], prefix: str) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", errors="replace")
        with _output_lock:  # whole lines from different ranks never interleave
            sys.stdout.write(prefix + text if text.endswith("\n") else prefix + text + "\n")
            sys.stdout.flush()
    stream.close()


def _wait(ranks: list[_Rank], grace_s: float, poll_s: float = 0.05) -> int:
    while True:
        codes = [rank.process.poll() for rank in ranks]
        failed = next((rank for rank, code in zip(ranks, codes) if code not in (None, 0)), None)
        if failed is not None:
            code = _exit_code(failed.process.returncode)
            log.error("rank %s exited with code %d; stopping the other ranks", failed.label, code)
            _stop(ranks, grace_s)
            return code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(poll_s)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(ranks: list[_Rank], grace_s: float) -> None:
    """SIGTERM every rank still running, then SIGKILL the ones still there after ``grace_s``."""
    running = [rank for rank in ranks if rank.process.poll() is None]
    for rank in running:
        _signal(rank.process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for rank in running:
        try:
            rank.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            log.warning("rank %s ignored SIGTERM for %g s; killing it", rank.label, grace_s)
            _signal(rank.process, signal.SIGKILL)
            rank.process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    # An unreaped process keeps its pid, so its process group cannot be someone else's yet.
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


def _close(ranks: list[_Rank]) -> None:
    for rank in ranks:
        if rank.pump is not None:
            rank.pump.join(timeout=5)  # let the last lines out before returning
        if rank.log_file is not None:
            rank.log_file.close()


@contextlib.contextmanager
def _forwarding_signals(ranks: list[_Rank]) -> Iterator[None]:
    """Pass SIGTERM (pod deletion) and SIGINT (Ctrl-C) on to every rank; ``_wait`` then sees them exit."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python only lets the main thread install signal handlers
        return

    def forward(signum: int, _frame: object) -> None:
        log.warning("got %s: passing it on to %d rank(s)", signal.Signals(signum).name, len(ranks))
        for rank in ranks:
            _signal(rank.process, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

