"""The tests' one loopback TCP forwarder: a port bound now that forwards to an address given
now or later, and that a fault test can cut (the service behind it "down" from its clients'
side, its state kept) and resume on the same port."""

from __future__ import annotations

import contextlib
import socket
import threading

CONNECT_WAIT = 90.0  # how long a connection waits for point_at (vector_service loads a model)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Forwarder:
    """content_service and vector_service each need the other's address and both bind port 0;
    content gets this port, and once vector_service is up the forwarder points at it. No port
    is picked first and bound later (that races)."""

    def __init__(self, target: str | None = None) -> None:
        self._target: tuple[str, int] | None = None
        self._ready = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._listen(0)
        self.address = f"127.0.0.1:{self.port}"
        if target:
            self.point_at(target)

    def point_at(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._target = (host, int(port))
        self._ready.set()

    def cut(self) -> None:
        """Refuses new connections and cuts the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def resume(self) -> None:
        """Serves again, on the same port."""
        if self._listener is None:
            self._listen(self.port)

    close = cut

    def _listen(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(
            target=self._accept, args=(self._listener,), name="forwarder", daemon=True
        ).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        if not self._ready.wait(CONNECT_WAIT) or self._target is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns += [client, upstream]
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)
