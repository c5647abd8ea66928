"""Loopback peers that never answer: a decoy that counts connections, and a full backlog.

- `Decoy` accepts TCP connections, counts them, reads nothing and answers nothing. SSRF tests
  hand its address out as a download URL and assert that it saw zero connections; a test of
  an endpoint "that accepts the connection and never answers" points a client at it.
- `full_backlog()` gives a port whose accept queue is full, so a new connection is never
  established and the client's *connect* timeout fires.

Both bind loopback addresses only (any 127.x.y.z works on Linux).
"""

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


class Decoy:
    """`with Decoy("127.0.0.2") as decoy:` ... `decoy.accepted` counts accepted connections."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0) -> None:
        if not host.startswith("127."):
            raise ValueError(f"a decoy binds loopback addresses only, not {host!r}")
        self.host = host
        self._sock = socket.create_server((host, port), backlog=64)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"decoy-{self.port}", daemon=True)

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def origin(self, scheme: str = "http", host: str | None = None) -> str:
        """`scheme://host:port`; `host` may be a name for this address, e.g. "localhost"."""
        return f"{scheme}://{host or self.host}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted += 1
                self._held.append(conn)  # held open, never answered

    def __enter__(self) -> "Decoy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for conn in self._held:
            conn.close()


@contextmanager
def full_backlog(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that listens but whose accept queue is full: connecting to it times out."""
    with ExitStack() as stack:
        server = stack.enter_context(socket.create_server((host, 0), backlog=0))
        port = server.getsockname()[1]
        for _ in range(4):  # more than the kernel queues for backlog 0; never accepted
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex((host, port))
        yield port
