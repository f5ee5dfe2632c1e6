"""Run data on its way to MLflow: sent from a background thread, held while the server is away.

Training must not stop, or wait, because the tracking server does. A step's metrics, params and tags go into
an ``Outbox``; its thread sends them in order and, when the server cannot be reached, keeps them and tries
again until it can. Closing waits a bounded time for the backlog; what still could not be sent is written to a
spool file (JSON lines) that ``crnn tracking-replay`` sends later, and the report says what was delayed.
MLflow's own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR``) run inside each attempt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crnn.files import atomic_path

log = logging.getLogger(__name__)

# MLflow's log-batch limits: a backlog is sent in batches this large.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100


@dataclass
class Batch:
    """Metrics as (key, value, timestamp ms, step), optionally followed by the model id, dataset name and digest
    they score (``mlflow.entities.Metric``'s order); params and tags as key -> value; ``status`` (with its
    ``end_time`` in ms) ends the run once the values are in."""

    metrics: list[tuple] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    end_time: int | None = None

    def fits(self, other: Batch) -> bool:
        return (self.status is None and len(self.metrics) + len(other.metrics) <= MAX_METRICS
                and len(self.params | other.params) <= MAX_PARAMS and len(self.tags | other.tags) <= MAX_TAGS
                # a param logged twice must reach the server as two requests, so its error stays its own
                and not self.params.keys() & other.params.keys())

    def absorb(self, other: Batch) -> None:
        self.metrics += other.metrics
        self.params |= other.params
        self.tags |= other.tags
        self.status, self.end_time = other.status, other.end_time

    def copy(self) -> Batch:
        return Batch(list(self.metrics), dict(self.params), dict(self.tags), self.status, self.end_time)

    def size(self) -> int:
        """The values it holds, the run's end counting as one."""
        return len(self.metrics) + len(self.params) + len(self.tags) + (self.status is not None)

    def to_json(self) -> str:
        return json.dumps(vars(self))

    @classmethod
    def from_json(cls, line: str) -> Batch:
        data = json.loads(line)
        return cls(**data | {"metrics": [tuple(m) for m in data["metrics"]]})


@dataclass
class OutboxReport:
    sent: int = 0  # values (metrics, params, tags) the server took
    delayed: int = 0  # of those, values that waited for the server to come back
    rejected: int = 0  # values the server refused (logged with the reason; retrying would not help)
    outage_seconds: float = 0.0  # total time the server could not be reached
    unsent: int = 0  # values still held at close, written to ``spool``
    spool: Path | None = None

    def describe(self) -> str:
        parts = [f"{self.sent} values sent"]
        if self.delayed:
            parts.append(f"{self.delayed} of them delayed by {self.outage_seconds:.0f} s without the tracking server")
        if self.rejected:
            parts.append(f"{self.rejected} rejected by the server")
        if self.unsent:
            parts.append(f"{self.unsent} not sent, kept in {self.spool} (send them with `crnn tracking-replay`)")
        return "; ".join(parts)


def is_rejection(error: Exception) -> bool:
    """A request the server understood and refused (4xx): sending it again would be refused again."""
    status = getattr(error, "get_http_status_code", lambda: 500)()
    return 400 <= status < 500 and status not in (408, 429)


class Outbox:
    """Sends batches through ``send`` in a background thread, in the order given, retrying through outages."""

    def __init__(self, send: Callable[[Batch], None], spool: Path, retry_seconds: float = 2.0):
        self._send = send
        self._spool = Path(spool)
        self._retry_seconds = retry_seconds
        self._queue: deque[Batch] = deque()
        self._lock = threading.Condition()
        self._closing = False
        self._in_flight: Batch | None = None
        self._report = OutboxReport()
        self._thread = threading.Thread(target=self._work, name="mlflow-outbox", daemon=True)
        self._thread.start()

    def put(self, batch: Batch) -> None:
        if not batch.size():
            return
        with self._lock:
            if self._closing:
                raise RuntimeError("the outbox is closed")
            self._queue.append(batch)
            self._lock.notify_all()

    def flush(self, timeout_seconds: float) -> bool:
        """Waits until everything put so far is sent or refused; False if the time ran out first."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while self._queue or self._in_flight is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def close(self, timeout_seconds: float) -> OutboxReport:
        """Stops after the backlog is sent or ``timeout_seconds`` pass; spools what is left.

        A batch still inside a slow attempt is spooled too: if that attempt succeeds after all, replaying the
        spool repeats it, which MLflow takes (the same metric point twice, params and tags unchanged).
        """
        self.flush(timeout_seconds)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout=1.0)
        with self._lock:
            left = ([self._in_flight] if self._in_flight is not None else []) + list(self._queue)
            self._queue.clear()
        if left:
            with atomic_path(self._spool) as tmp:
                tmp.write_text("".join(batch.to_json() + "\n" for batch in left))
            self._report.unsent = sum(batch.size() for batch in left)
            self._report.spool = self._spool
            log.warning("tracking server unreachable: %d values kept in %s", self._report.unsent, self._spool)
        return self._report

    def _next(self) -> Batch | None:
        """The oldest batch, merged with those after it while they fit one request; None once closed."""
        with self._lock:
            while not self._queue and not self._closing:
                self._lock.wait()
            if self._closing:
                return None
            batch = self._queue[0].copy()
            taken = 1
            for later in list(self._queue)[1:]:
                if not batch.fits(later):
                    break
                batch.absorb(later)
                taken += 1
            for _ in range(taken):
                self._queue.popleft()
            self._in_flight = batch
            return batch

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            if not self._deliver(batch):
                return  # closing with the batch unsent: it stays in flight and is spooled

    def _deliver(self, batch: Batch) -> bool:
        """Sends ``batch`` until the server takes or refuses it (True), or the outbox closes first (False)."""
        outage_started = None
        while True:
            try:
                self._send(batch)
                self._done(batch.size(), outage_started)
                return True
            except Exception as error:  # noqa: BLE001 - any failure but a refusal means: try again
                if is_rejection(error):
                    log.error("MLflow refused %d values: %s", batch.size(), error)
                    self._done(0, None, rejected=batch.size())
                    return True
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.warning("tracking server unreachable, holding run data: %s", str(error)[:200])
            with self._lock:  # new values arriving do not cut the wait short; closing does
                if self._lock.wait_for(lambda: self._closing, timeout=self._retry_seconds):
                    return False

    def _done(self, sent: int, outage_started: float | None, rejected: int = 0) -> None:
        with self._lock:
            self._report.sent += sent
            self._report.rejected += rejected
            if outage_started is not None:  # everything that waited meanwhile was delayed, sent or still queued
                held = sent + sum(batch.size() for batch in self._queue)
                outage = time.monotonic() - outage_started
                self._report.delayed += held
                self._report.outage_seconds += outage
                log.warning("tracking server back after %.0f s: sending %d held values", outage, held)
            self._in_flight = None
            self._lock.notify_all()


def read_spool(path: Path) -> Iterator[Batch]:
    for line in Path(path).read_text().splitlines():
        if line.strip():
            yield Batch.from_json(line)
