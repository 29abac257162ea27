"""The children's events to the supervisor: a pipe per child process, read by one thread.

Through the Manager each event cost two round trips (the child's put, the supervisor's get) and
the Manager's CPU, some 1,800 of each for 16 endpoints of 100 tasks. A pipe costs one write. A
child killed in the middle of a write damages only its own pipe: its reader sees the end of it
and closes it, as it does when the child exits.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import selectors
import threading
import time
from multiprocessing.connection import Connection, Pipe
from typing import Any

from pipeline.messages import Event

CLOSE_WAIT_S = 5.0
# A child's end was closed (it exited or was killed), or what it left is half a message.
_ENDED = (EOFError, OSError, pickle.UnpicklingError)


class EventSender:
    """A child's end: `put` sends one event; the threads of a child take turns."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def __getstate__(self) -> Connection:
        return self._connection  # a lock does not travel: the child makes its own

    def __setstate__(self, connection: Connection) -> None:
        self.__init__(connection)

    def put(self, event: Event, block: bool = True, timeout: float | None = None) -> None:
        """Send `event` (a closed pipe raises BrokenPipeError: the supervisor is gone)."""
        with self._lock:
            self._connection.send(event)


class EventPipes:
    """The supervisor's side: `open` a pipe for each child it starts, then `get` the events of
    all of them in arrival order. A thread reads the pipes as events come, so a child never
    waits for the supervisor (which may be busy joining another)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._open: dict[Connection, str] = {}
        self._watched: set[Connection] = set()  # the reader thread's: those it selects on
        self._changed = threading.Condition()
        self._wake_read, self._wake = Pipe(duplex=False)
        self._closing = False
        self._thread = threading.Thread(target=self._read, name="events", daemon=True)
        self._thread.start()

    def open(self, name: str) -> tuple[EventSender, Connection]:
        """A pipe for the child `name`: (its end, to pass at its start; this process's copy of
        it, to `started` once the child has it)."""
        reader, writer = Pipe(duplex=False)
        with self._changed:
            self._open[reader] = name
        self._wake.send_bytes(b"")
        return EventSender(writer), writer

    @staticmethod
    def started(copy: Connection) -> None:
        """The child has its end: close ours, so that its exit ends the pipe."""
        copy.close()

    def get(self, block: bool = True, timeout: float | None = None) -> Event:
        """The next event, waiting up to `timeout` (queue.Empty after that)."""
        return self._queue.get(block, timeout)

    def get_nowait(self) -> Event:
        """The next event if there is one (queue.Empty if not)."""
        return self._queue.get_nowait()

    def settle(self, names: set[str], timeout: float) -> bool:
        """Wait until the pipes of the children `names` (exited by now) are read to their end,
        at most `timeout` seconds; whether they were."""
        deadline = time.monotonic() + timeout
        with self._changed:
            return self._changed.wait_for(
                lambda: not names & set(self._open.values()),
                max(0.0, deadline - time.monotonic()),
            )

    def close(self) -> None:
        """Stop reading and close every pipe."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake.send_bytes(b"")
        self._thread.join(CLOSE_WAIT_S)  # (a daemon: it never holds up the run's end)
        with self._changed:
            for reader in self._open:
                reader.close()
            self._open.clear()
        self._wake.close()
        self._wake_read.close()

    def _read(self) -> None:
        # One selector for the run: connection.wait() would register every pipe again at each
        # event (~1 ms of this process's CPU per event at 16 endpoints).
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_read:
                        self._wake_read.recv_bytes()
                        self._watch_new(selector)
                    else:
                        self._take(key.fileobj, selector)

    def _watch_new(self, selector: selectors.BaseSelector) -> None:
        with self._changed:
            for reader in self._open:
                if reader not in self._watched:
                    selector.register(reader, selectors.EVENT_READ)
                    self._watched.add(reader)

    def _take(self, reader: Any, selector: selectors.BaseSelector) -> None:
        """Every event the pipe holds now; at its end, close it."""
        try:
            self._queue.put(reader.recv())
            while reader.poll():
                self._queue.put(reader.recv())
        except _ENDED:
            selector.unregister(reader)
            self._watched.discard(reader)
            with self._changed:
                del self._open[reader]
                self._changed.notify_all()
            reader.close()
