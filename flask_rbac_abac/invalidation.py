"""The invalidation subscriber: one daemon thread per process that evicts L1 entries.

The identity provider publishes every change on ``{prefix}:invalidate``. Pub/sub is fire and
forget, so whenever the subscription is (re)established the whole L1 is flushed: anything
published while this process was not listening is lost, and the L1 TTL alone would otherwise
bound how long a revoked role survives.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .connection import pubsub as open_pubsub
from .errors import DecodeError
from .keys import invalidation_channel
from .model import Invalidation

log = logging.getLogger(__name__)

#: Seconds of silence after which the subscriber pings Redis, to notice a dead connection.
PING_EVERY = 5.0
#: Longest wait between two attempts to subscribe again. Short, because until it is back the
#: process hears no revocation; a failed attempt on a dead node is one refused connection (or
#: one connect timeout), cheap at this rate.
MAX_BACKOFF = 0.5

#: Counts the forks this process comes from: a child sees a new value, so "the subscriber was
#: started in this process" is one integer comparison on the lookup path (no ``getpid`` call).
generation = 0


def _forked() -> None:
    global generation  # the one process-wide fact, bumped in the child
    generation += 1


os.register_at_fork(after_in_child=_forked)


class Subscriber:
    """Listens on the invalidation channel and calls ``on_message`` / ``on_connect``.

    :param redis_factory: returns a redis-py client whose commands do not retry, so that every
        lost connection surfaces here (and L1 gets flushed) instead of being silently resumed.
    """

    def __init__(
        self,
        redis_factory: Callable[[], Any],
        prefix: str,
        on_message: Callable[[Invalidation], None],
        on_connect: Callable[[], None],
    ) -> None:
        self.channel = invalidation_channel(prefix)
        self._redis_factory = redis_factory
        self._on_message = on_message
        self._on_connect = on_connect
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self.connected = False
        self.connects = 0
        self.messages = 0
        self.last_message_at: float | None = None
        self.last_error: str | None = None
        self._subscribed = threading.Event()

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running (cheap; safe after fork)."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._subscribed = threading.Event()
            self.connected = False
            self._thread = threading.Thread(
                target=self._run, name="rbac-abac-invalidation", daemon=True
            )
            self._thread.start()

    def wait_until_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def state(self) -> dict[str, Any]:
        alive = self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()
        return {
            "alive": alive,
            "connected": self.connected and alive,
            "channel": self.channel,
            "connects": self.connects,
            "messages": self.messages,
            "last_message_at": self.last_message_at,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        backoff = 0.05
        failures = 0  # in a row: on a cluster, each one moves the subscription to another node
        client = None
        while not self._stop.is_set():
            pubsub = None
            try:
                if client is None:  # a cluster client needs a live node to be built at all
                    client = self._redis_factory()
                pubsub = open_pubsub(client, self.channel, failures)
                pubsub.subscribe(self.channel)
                self._listen(pubsub)
                backoff = 0.05
            except Exception as exc:  # any failure: drop the connection, flush, retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                failures = 1 if self.connected else failures + 1
                if self.connected:
                    backoff = 0.05
                    log.warning("invalidation subscriber lost Redis: %s", self.last_error)
            finally:
                self.connected = False
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: S110 - closing a dead connection
                        pass
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _listen(self, pubsub: Any) -> None:
        last_activity = time.monotonic()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.25)
            now = time.monotonic()
            if message is None:
                if now - last_activity > PING_EVERY:
                    pubsub.ping()
                    last_activity = now
                continue
            last_activity = now
            kind = message.get("type")
            if kind == "subscribe":
                # Listening from here on: whatever was published before may be lost.
                self._on_connect()
                self.connected = True
                self.connects += 1
                self._subscribed.set()
            elif kind == "message":
                self._handle(message.get("data"))

    def _handle(self, data: Any) -> None:
        try:
            message = Invalidation.from_json(data)
        except DecodeError as exc:
            log.warning("ignoring malformed invalidation: %s", exc)
            return
        self.messages += 1
        self.last_message_at = time.time()
        self._on_message(message)
