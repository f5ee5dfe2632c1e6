"""A lock over a registered model's aliases, made of the registry itself.

Two pipelines finishing together would each read the champion, each decide, and the later alias would win
whatever the gate said. MLflow has no transactions, but creating a registered model is atomic: the name is
unique. So ``<model>.gate-lock`` exists while one process decides; another waits for it to go.

A lock left by a process that died is broken once its ``beat`` tag has not changed for ``stale_seconds`` of the
waiter's own clock: the holder renews the tag every ``stale_seconds / 4`` meanwhile, so a holder that is merely
slow (a tracking server that answers late) keeps its lock, and no two hosts' clocks are ever compared. A holder
releases only its own lock (its ``holder`` tag), and ``Held.check`` tells it, before it moves an alias, that
the lock is still its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

log = logging.getLogger(__name__)

HOLDER_TAG, BEAT_TAG = "holder", "beat"


class LockLost(RuntimeError):
    """The lock was broken by another process while this one held it (it had been silent too long)."""


class Held:
    """The lock as its holder sees it."""

    def __init__(self, client, name: str, token: str):
        self._client, self.name, self.token = client, name, token

    def check(self) -> None:
        """Raises ``LockLost`` unless the lock is still this holder's (a tracking error is raised as it is)."""
        if _holder(self._client, self.name) != self.token:
            raise LockLost(f"registry lock {self.name} was broken while this process ({self.token}) held it; "
                           "champion was not moved: run the step again")


@contextlib.contextmanager
def registry_lock(client, model_name: str, timeout_seconds: float = 600, stale_seconds: float = 300,
                  poll_seconds: float = 0.5) -> Iterator[Held]:
    """Holds ``<model_name>.gate-lock`` meanwhile; raises ``TimeoutError`` if it cannot be had in time."""
    from mlflow.exceptions import MlflowException

    name = f"{model_name}.gate-lock"
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_seconds
    watch = _Staleness(stale_seconds)
    while True:
        try:
            client.create_registered_model(name, tags={HOLDER_TAG: token, BEAT_TAG: "0"},
                                           description="held while a gate decides")
            break
        except MlflowException as error:
            # RESOURCE_DOES_NOT_EXIST: the SQL store lost the insert race, then looked the lock up to report
            # it, and its holder had released it meanwhile (seen with four threads). Either way: try again.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        if watch.held_by(client, name) == token:  # made by a create whose answer was lost, then retried
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"registry lock {name} still held after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    stop = threading.Event()
    beating = threading.Thread(target=_beat, args=(client, name, token, stale_seconds / 4, stop), daemon=True)
    beating.start()
    try:
        yield Held(client, name, token)
    finally:
        stop.set()
        beating.join()
        try:
            if _holder(client, name) == token:  # broken and taken by another meanwhile: theirs now, left alone
                client.delete_registered_model(name)
        except MlflowException as err:  # left to go stale; a waiter breaks it once it sees no beat
            log.warning("cannot release registry lock %s (%s); it expires unrenewed", name, err)


def _beat(client, name: str, token: str, every: float, stop: threading.Event) -> None:
    """Renews the lock's ``beat`` tag until ``stop``; a failed renewal (a tracking outage) is tried again."""
    from mlflow.exceptions import MlflowException

    beats = 0
    while not stop.wait(every):
        beats += 1
        try:
            if _holder(client, name) != token:
                return
            client.set_registered_model_tag(name, BEAT_TAG, str(beats))
        except (MlflowException, OSError) as err:
            log.warning("cannot renew registry lock %s (%s); trying again", name, err)


def _tags(client, name: str) -> dict[str, str] | None:
    """The lock's tags; None when there is no lock. Other tracking errors (an outage) are raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name).tags
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _holder(client, name: str) -> str | None:
    tags = _tags(client, name)
    return None if tags is None else tags.get(HOLDER_TAG)


class _Staleness:
    """A waiter's view of the lock: when it last saw its holder or beat change, by the waiter's own clock."""

    def __init__(self, stale_seconds: float):
        self._stale_seconds = stale_seconds
        self._seen: tuple[str | None, str | None] | None = None
        self._since = time.monotonic()

    def held_by(self, client, name: str) -> str | None:
        """The lock's holder, after breaking the lock if it has been silent too long (then None)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = _tags(client, name)
        except MlflowException as err:  # an outage: wait on, the deadline still applies
            log.warning("cannot read registry lock %s (%s)", name, err)
            return None
        if tags is None:  # released meanwhile
            return None
        seen = (tags.get(HOLDER_TAG), tags.get(BEAT_TAG))
        if seen != self._seen:
            self._seen, self._since = seen, time.monotonic()
            return seen[0]
        silent = time.monotonic() - self._since
        if silent > self._stale_seconds:
            with contextlib.suppress(MlflowException):
                latest = _tags(client, name)  # read again just before: a beat, or another breaker, since
                if latest is not None and (latest.get(HOLDER_TAG), latest.get(BEAT_TAG)) == seen:
                    log.warning("breaking registry lock %s held by %s, silent for %.0f s", name, seen[0], silent)
                    client.delete_registered_model(name)
            self._seen = None
        return seen[0]
