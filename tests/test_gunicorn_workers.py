"""gunicorn as configured by gunicorn.conf.py: connections that a sender keeps open are
spread over the workers, instead of all landing on whichever worker accepted first."""

import http.client
import os
from pathlib import Path

from tests.servers import free_port, gunicorn, sqlite_site

GUNICORN_PORT = free_port()
CONNECTIONS = 16


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's end of the TCP connection from client_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return inode
    raise AssertionError(f"no server-side socket for client port {client_port}")


def test_kept_open_connections_are_spread_over_the_workers(tmp_path):
    env, _ = sqlite_site(tmp_path)
    with gunicorn(port=GUNICORN_PORT, env=env, workers=2, options=["--threads", "2"]) as server:
        connections = []
        try:
            for _ in range(CONNECTIONS):
                connection = http.client.HTTPConnection("127.0.0.1", GUNICORN_PORT, timeout=30)
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                connections.append(connection)  # kept open (HTTP/1.1 keep-alive)

            owners = {}
            for worker in _workers(server.pid):
                for inode in _socket_inodes(worker):
                    owners[inode] = worker
            served_by = [
                owners.get(_server_side_inode(GUNICORN_PORT, connection.sock.getsockname()[1]))
                for connection in connections
            ]
        finally:
            for connection in connections:
                connection.close()

    assert None not in served_by  # each open connection is held by a worker
    # With one listening socket shared by all workers, the first worker to wake took them
    # all; with a socket per worker the kernel spreads them (16 on one of 2 workers: 3e-5).
    assert len(set(served_by)) == 2
