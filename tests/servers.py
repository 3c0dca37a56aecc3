"""A real gunicorn serving natsite for tests that need separate processes (faults, rate
limits across workers), and a Segment-like client for it."""

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    """A TCP port nothing listens on now, chosen by the kernel: tests never count on a
    fixed port being free (gunicorn's workers bind with SO_REUSEPORT, so a server left on
    a fixed port would silently share it rather than make the next one fail to start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn(*, port: int, env: dict, workers: int = 2, options=()):
    """Runs `gunicorn natsite.wsgi` on 127.0.0.1:port with `env` added to this process's
    environment; `options`: more gunicorn command-line options."""
    log = open(f"/tmp/natsite-test-gunicorn-{port}.log", "wb")
    server = subprocess.Popen(
        [str(GUNICORN), "natsite.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--timeout", "30", *options],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "false", **env},
        start_new_session=True,
        stderr=log,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start on port {port}; see {log.name}") from None
                time.sleep(0.1)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        # Workers may outlive their master for a moment, still holding the listening
        # socket: a next server on this port would be mistaken for this dying one.
        deadline = time.time() + 30
        while time.time() < deadline and _listening(port):
            time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def post(port: int, key: str, payload, timeout: float = 30) -> Answer:
    """POST a payload to the webhook as Segment does (Basic auth, key as the user name)."""
    token = base64.b64encode(f"{key}:".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/ingest/segment",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def manage(env: dict, *args) -> str:
    """Run a manage.py command with `env` added to this process's environment; its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def sqlite_site(directory: Path, **settings) -> tuple[dict, str]:
    """A migrated SQLite natsite in `directory` with one workspace: (env, its API key)."""
    env = {"DATABASE_URL": f"sqlite:///{directory / 'natsite.sqlite3'}", "INGEST_RATE_LIMIT": "0"}
    env.update({name: str(value) for name, value in settings.items()})
    manage(env, "migrate", "--noinput", "-v", "0")
    key = manage(env, "createworkspace", "Acme").rstrip("\n").splitlines()[-1]
    return env, key
