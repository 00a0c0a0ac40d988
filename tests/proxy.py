"""A TCP proxy for outage tests: forwards 127.0.0.1:<port> to a server until cut.

`cut()` closes every forwarded connection and refuses new ones (what a client sees when the
database restarts or a network path is lost and the far end resets); `stall()` keeps every
connection open but holds what is sent (a path that silently stops delivering: calls hang);
`restore()` forwards again.
Threads only, bounded: it serves loopback and stops with `close()`.
"""

from __future__ import annotations

import socket
import threading


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.sockets.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                while not self.flowing.wait(0.05):  # stalled: hold it
                    if self.closed or not self.up.is_set():
                        return
                if not data or not self.up.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _reset(sock)

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for sock in self.sockets:
                _reset(sock)
            self.sockets.clear()

    def stall(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.up.set()
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def _reset(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
