"""A TCP proxy that can be cut and restored: the database "stops" for the app behind it
while the real PostgreSQL server, shared with everyone else, keeps running.

cut() closes every open connection through the proxy and refuses new ones (accepted,
then closed at once, as a server that has gone away); silence() closes them too but
leaves new ones unanswered (a server that hangs); restore() lets connections through
again. Used by tests/test_faults.py and bench/load.py --fault.
"""

import socket
import threading


class TcpProxy:
    def __init__(self, *, listen_port: int, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"):
        self.listen = (listen_host, listen_port)
        self.upstream = (upstream_host, upstream_port)
        self._server = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._silent = False
        self._stopping = False
        self.connections = 0

    def start(self) -> "TcpProxy":
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(128)
        self._server = server
        threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._close_all()
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            except OSError:
                pass
            self._server.close()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """The database goes away: open connections drop, new ones are refused."""
        self._cut = True
        self._close_all()

    def silence(self) -> None:
        """The database hangs: open connections drop, new ones are accepted and never answered."""
        self._silent = True
        self._close_all()

    def restore(self) -> None:
        if self._silent:
            self._close_all()
        self._cut = False
        self._silent = False

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            if self._silent:
                with self._lock:
                    self._sockets.add(client)  # held open, never answered, closed on restore or stop
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
                self.connections += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(target)
