"""Ingest benchmark: natsite's webhook under load, side by side with what PostgreSQL
itself can do with the same statements, in one run.

    .venv/bin/python bench/ingest.py            # ~3 minutes, prints a table

What it does, in order:
1. recreates the benchmark database (BENCH_DATABASE_URL, default
   postgres://postgres@127.0.0.1:5432/natsite_perf_bench), migrates it and makes a
   workspace with an API key;
2. starts gunicorn (bench/wsgi.py: natsite plus an X-Queries header per response)
   and drives it from this process with a lean keep-alive HTTP/1.1 client: single
   messages at several concurrencies (closed loop), batches of 100 and 1,000, and
   single messages offered open-loop at a fixed rate (latency measured from the
   scheduled send time, so a slow server cannot hide its queue);
3. replays the SQL one ingest makes through pgbench (the statements natsite sends,
   prepared, one transaction per event, 8 clients, random emails and days) on the same
   database: the ceiling;
4. times import_events (or ingest_messages in chunks of 1,000 when the command
   does not exist) on PostgreSQL and on SQLite.

Each phase starts after a CHECKPOINT, so none pays for the WAL of the one before.
Besides events/s and latencies, each row shows CPU milliseconds per event: the app's
(gunicorn's processes), PostgreSQL's (the machine's busy time less the app's and the
load generator's) and the load generator's share of a core. On a shared machine events/s
move with whatever else runs; CPU per event moves much less.

Messages are realistic identifies: a pool of contacts, days spread over a year,
traits, a page URL, a unique messageId each.
"""

import argparse
import base64
import json
import os
import random
import re
import resource
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/natsite_perf_bench"
PLANS = ["free", "starter", "pro", "enterprise"]
NOW = datetime.now(timezone.utc)


# --- messages -------------------------------------------------------------------------


class Messages:
    """Identify messages over a pool of contacts and a year of days."""

    def __init__(self, contacts: int, seed: int):
        self.contacts = contacts
        self.run = uuid.uuid4().hex[:8]
        self.counter = 0
        self.lock = threading.Lock()
        self.random = random.Random(seed)

    def one(self) -> dict:
        with self.lock:
            self.counter += 1
            n = self.counter
            k = self.random.randrange(self.contacts)
            seconds = self.random.randrange(365 * 86400)
        moment = NOW - timedelta(seconds=seconds)
        return {
            "type": "identify",
            "messageId": f"bench-{self.run}-{n}",
            "userId": f"user-{k}",
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "traits": {
                "email": f"contact{k}@example.com",
                "firstName": f"First{k}",
                "lastName": "Bench",
                "plan": PLANS[k % len(PLANS)],
                "logins": n,
            },
            "context": {"page": {"url": f"https://app.example.com/p/{n % 97}"}, "library": {"name": "bench"}},
        }

    def body(self, size: int) -> bytes:
        if size == 1:
            return json.dumps(self.one()).encode()
        return json.dumps([self.one() for _ in range(size)]).encode()


# --- a lean HTTP/1.1 keep-alive client ------------------------------------------------


class Connection:
    def __init__(self, port: int, auth: str):
        self.port = port
        self.head = (
            "POST /ingest/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth}\r\nContent-Length: "
        ).encode()
        self.sock = None
        self.buffer = b""

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, body: bytes) -> tuple[int, int, bytes]:
        """(status, X-Queries, body); reconnects once if the server closed the connection."""
        for attempt in (0, 1):
            if self.sock is None:
                self.connect()
            try:
                self.sock.sendall(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
                return self._read()
            except (ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _read(self):
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, queries, close = 0, 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-queries":
                queries = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        self.buffer = rest
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if close:
            self.close()
        return status, queries, body

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


# --- CPU time, the steadier figure on a shared machine ------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # less idle and iowait


def _machine_stolen() -> float:
    """CPU seconds the hypervisor gave to other machines while this one wanted them
    (/proc/stat's steal): a phase that shows some ran on less than two cores."""
    fields = open("/proc/stat").readline().split()
    return int(fields[8]) / TICKS if len(fields) > 8 else 0.0


class StolenMeter:
    """The share of the machine's CPU time stolen since it started, in percent."""

    def __init__(self):
        self.stolen, self.started = _machine_stolen(), time.perf_counter()

    def percent(self) -> float:
        elapsed = time.perf_counter() - self.started
        return 100 * (_machine_stolen() - self.stolen) / (elapsed * (os.cpu_count() or 1)) if elapsed > 0 else 0.0


class CpuMeter:
    """CPU seconds spent during a phase by the gunicorn workers (app) and by PostgreSQL:
    per event they move less than events/s when other work shares the cores. PostgreSQL's
    share is the machine's busy time less the app's and the load generator's (backends
    come and go, so they cannot be summed one by one); on a quiet machine, the rest is
    PostgreSQL. The load generator is this process and the ones it ran to the end
    meanwhile (wrk, pgbench)."""

    server_pid = None

    def __init__(self):
        self.server, self.machine, self.client = self._server(), _machine_busy(), self._generator()
        self.steal = StolenMeter()

    @staticmethod
    def _generator() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def generator_seconds(self) -> float:
        """CPU seconds of the load generator since the meter started."""
        return self._generator() - self.client

    @classmethod
    def _server(cls) -> float:
        if cls.server_pid is None:
            return 0.0
        return sum(_cpu_of(pid) for pid in [cls.server_pid, *_children(cls.server_pid)])

    def per_event_ms(self, events: int) -> tuple[float, float]:
        if not events:
            return float("nan"), float("nan")
        server = self._server() - self.server
        rest = _machine_busy() - self.machine - server - self.generator_seconds()
        return 1000 * server / events, 1000 * max(rest, 0.0) / events


def checkpoint(database_url) -> None:
    """Each phase starts with no checkpoint owed by the one before (a batch phase writes
    enough WAL to make PostgreSQL checkpoint during the next)."""
    import psycopg

    try:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("CHECKPOINT")
    except psycopg.Error as error:  # not a superuser: the phases simply follow each other
        print(f"(no CHECKPOINT between phases: {error})")


# --- load phases ----------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.events = 0
        self.queries = 0
        self.errors = {}

    def add(self, latency, events, status, queries, body):
        with self.lock:
            self.latencies.append(latency)
            self.queries += queries
            if status == 200:
                self.events += events
            else:
                key = f"{status} {body[:80].decode(errors='replace')}"
                self.errors[key] = self.errors.get(key, 0) + 1


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summarize(name, tally, elapsed, cpu, meter):
    lat = tally.latencies
    server_ms, database_ms = meter.per_event_ms(tally.events)
    return {
        "server_cpu_ms": server_ms,
        "database_cpu_ms": database_ms,
        "phase": name,
        "events_per_s": tally.events / elapsed,
        "requests": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p95_ms": percentile(lat, 95) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "queries_per_event": tally.queries / tally.events if tally.events else float("nan"),
        "errors": tally.errors,
        "loadgen_cpu_pct": 100 * cpu / elapsed,
        "stolen_pct": meter.steal.percent(),
    }


def closed_loop(port, auth, messages, *, size, concurrency, seconds):
    """`concurrency` clients, each posting again as soon as its answer arrives."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    def client():
        connection = Connection(port, auth)
        while time.perf_counter() < deadline:
            body = messages.body(size)
            started = time.perf_counter()
            status, queries, answer = connection.post(body)
            tally.add(time.perf_counter() - started, size, status, queries, answer)
        connection.close()

    meter, cpu0, start = CpuMeter(), time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    label = "single" if size == 1 else f"batch {size}"
    return summarize(f"{label}, {concurrency} clients", tally, elapsed, cpu, meter)


# wrk (a C load generator, Debian's package) sends the single messages when it is
# installed: one Python process with many client threads spends more time on its own
# GIL than the server takes to answer, and caps what it measures.
WRK_SCRIPT = """
math.randomseed(os.time() + {seed})
local run = "{run}"
local counter = 0
-- globals, so that done() can read each thread's with thread:get()
queries = 0
created = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{auth}"
local plans = {{"free", "starter", "pro", "enterprise"}}
local now = {now}

setup = function(thread)
  thread:set("id", tostring(thread))
  table.insert(threads, thread)
end

init = function(args)
  run = run .. "-" .. id
end

request = function()
  counter = counter + 1
  local k = math.random(0, {contacts} - 1)
  local moment = now - math.random(0, 365 * 86400 - 1)
  local body = string.format(
    '{{"type":"identify","messageId":"bench-%s-%d","userId":"user-%d","timestamp":"%s",'
    .. '"traits":{{"email":"contact%d@example.com","firstName":"First%d","lastName":"Bench","plan":"%s","logins":%d}},'
    .. '"context":{{"page":{{"url":"https://app.example.com/p/%d"}},"library":{{"name":"bench"}}}}}}',
    run, counter, k, os.date("!%Y-%m-%dT%H:%M:%S.000Z", moment), k, k, plans[k % 4 + 1], counter, counter % 97)
  return wrk.format(nil, "/ingest/segment", nil, body)
end

response = function(status, headers, body)
  if status == 200 then
    created = created + 1
    queries = queries + tonumber(headers["X-Queries"] or "0")
  end
end

threads = {{}}

done = function(summary, latency, requests)
  local ok, sql = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("created")
    sql = sql + thread:get("queries")
  end
  io.write(string.format("RESULT ok=%d sql=%d requests=%d micros=%d p50=%d p95=%d p99=%d\\n",
    ok, sql, summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def closed_loop_wrk(port, auth, *, contacts, concurrency, seconds):
    """Single messages from wrk, `concurrency` connections, each sending again as soon as
    its answer arrives."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(
            seed=concurrency, run=uuid.uuid4().hex[:8], auth=auth, contacts=contacts, now=int(time.time()),
        ))
    meter = CpuMeter()
    try:
        done = subprocess.run(
            ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds:g}s", "-s", script.name,
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        )
    finally:
        os.unlink(script.name)
    found = dict(re.findall(r"(\w+)=(\d+)", re.search(r"RESULT (.*)", done.stdout).group(1)))
    ok, elapsed = int(found["ok"]), int(found["micros"]) / 1e6
    requests = int(found["requests"])
    server_ms, database_ms = meter.per_event_ms(ok)
    return {
        "phase": f"single, {concurrency} clients (wrk)",
        "events_per_s": ok / elapsed,
        "requests": requests,
        "p50_ms": int(found["p50"]) / 1000,
        "p95_ms": int(found["p95"]) / 1000,
        "p99_ms": int(found["p99"]) / 1000,
        "queries_per_event": int(found["sql"]) / ok if ok else float("nan"),
        "errors": {f"{requests - ok} not 200": requests - ok} if requests != ok else {},
        "loadgen_cpu_pct": 100 * meter.generator_seconds() / elapsed,
        "server_cpu_ms": server_ms,
        "database_cpu_ms": database_ms,
        "stolen_pct": meter.steal.percent(),
    }


def open_loop(port, auth, messages, *, rate, seconds, clients=32):
    """Messages offered at `rate` per second whatever the server does; latency counts
    from each message's scheduled time, so queueing behind a slow answer shows."""
    tally = Tally()
    total = int(rate * seconds)
    lock = threading.Lock()
    next_index = [0]
    start = time.perf_counter() + 0.05

    def client():
        connection = Connection(port, auth)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                break
            body = messages.body(1)
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status, queries, answer = connection.post(body)
            tally.add(time.perf_counter() - scheduled, 1, status, queries, answer)
        connection.close()

    meter, cpu0 = CpuMeter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return summarize(f"open loop {rate}/s offered", tally, elapsed, cpu, meter)


# --- the pgbench ceiling ----------------------------------------------------------------

# The statements natsite sends for one identify that creates a new day on PostgreSQL
# (ingest/authentication.py, ingest/services.py), as they are sent for a single message:
# the API-key look-up, then one transaction with the claim-and-upsert statement (the
# messageId, the contact and the interaction) and the contact write, each row's values as
# typed parameters; random emails and days, one transaction per event, prepared
# (-M prepared), as natsite prepares them.
PGBENCH_SCRIPT = """\
\\set k random(0, {contacts} - 1)
\\set d random(0, 364)
\\set m random(1, 1000000000000)
SELECT k.*, w.* FROM ingest_apikey k JOIN contacts_workspace w ON w.id = k.workspace_id WHERE k.prefix = '{prefix}';
BEGIN;
WITH claimed AS (INSERT INTO ingest_processedmessage (workspace_id, message_id, received_at)
    VALUES (CAST({workspace} AS bigint), CAST('pgbench-' || :client_id || '-' || :m AS text), now())
    ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id),
  locked AS (INSERT INTO contacts_contact (workspace_id, email, name, user_id, traits, trait_times, first_seen_at, created_at)
    SELECT CAST({workspace} AS bigint), CAST('pgbench' || :k || '@example.com' AS text), '', '', '{{}}', '{{}}',
      CAST(now() - CAST(:d AS integer) * interval '1 day' AS timestamptz), now() FROM claimed
    ON CONFLICT (workspace_id, email) DO UPDATE SET email = excluded.email
    RETURNING id, email, name, user_id, traits, trait_times, first_seen_at, last_interaction_day, closeness_log,
      last_interaction_log_strength),
  merged AS (INSERT INTO contacts_interaction (workspace_id, contact_id, day, occurred_at, last_occurred_at, description,
      url, event_count)
    SELECT {workspace}, locked.id, day, occurred_at, last_occurred_at, description, url, event_count
    FROM locked, (SELECT CAST(current_date - CAST(:d AS integer) AS date) AS day,
        CAST(now() - CAST(:d AS integer) * interval '1 day' AS timestamptz) AS occurred_at,
        CAST(now() - CAST(:d AS integer) * interval '1 day' AS timestamptz) AS last_occurred_at,
        CAST('https://app.example.com/p/1' AS text) AS description, CAST('https://app.example.com/p/1' AS text) AS url,
        CAST(1 AS integer) AS event_count) AS v
    WHERE true ORDER BY 2, 3 ON CONFLICT (contact_id, day) DO UPDATE SET
      event_count = contacts_interaction.event_count + excluded.event_count,
      description = CASE WHEN excluded.occurred_at < contacts_interaction.occurred_at OR (excluded.occurred_at =
        contacts_interaction.occurred_at AND excluded.description COLLATE "C" < contacts_interaction.description COLLATE "C")
        THEN excluded.description ELSE contacts_interaction.description END,
      url = CASE WHEN excluded.occurred_at < contacts_interaction.occurred_at OR (excluded.occurred_at =
        contacts_interaction.occurred_at AND excluded.description COLLATE "C" < contacts_interaction.description COLLATE "C")
        THEN excluded.url ELSE contacts_interaction.url END,
      occurred_at = CASE WHEN excluded.occurred_at < contacts_interaction.occurred_at
        THEN excluded.occurred_at ELSE contacts_interaction.occurred_at END,
      last_occurred_at = CASE WHEN excluded.last_occurred_at > contacts_interaction.last_occurred_at
        THEN excluded.last_occurred_at ELSE contacts_interaction.last_occurred_at END
    RETURNING contact_id, day, event_count)
SELECT id, email, name, user_id, traits, trait_times, first_seen_at, last_interaction_day, closeness_log,
  last_interaction_log_strength, claimed.message_id, merged.day, merged.event_count
  FROM claimed JOIN locked ON true LEFT JOIN merged ON true
\\aset
UPDATE contacts_contact SET name = v.name, user_id = v.user_id, traits = v.traits, trait_times = v.trait_times,
    first_seen_at = v.first_seen_at, last_interaction_day = v.last_interaction_day, closeness_log = v.closeness_log,
    last_interaction_log_strength = v.last_interaction_log_strength
  FROM (SELECT CAST(:id AS bigint) AS id, CAST('First' || :k || ' Bench' AS text) AS name,
      CAST('user-' || :k AS text) AS user_id,
      CAST('{{"email": "pgbench' || :k || '@example.com", "firstName": "First' || :k
        || '", "lastName": "Bench", "plan": "pro", "logins": 1}}' AS jsonb) AS traits,
      CAST('{{" user_id": "2026-01-01T00:00:00.000000Z", "email": "2026-01-01T00:00:00.000000Z", '
        || '"firstname": "2026-01-01T00:00:00.000000Z", "lastname": "2026-01-01T00:00:00.000000Z", '
        || '"plan": "2026-01-01T00:00:00.000000Z", "logins": "2026-01-01T00:00:00.000000Z"}}' AS jsonb) AS trait_times,
      CAST(now() - CAST(:d AS integer) * interval '1 day' AS timestamptz) AS first_seen_at,
      CAST(current_date - CAST(:d AS integer) AS date) AS last_interaction_day,
      CAST(52000.0 + CAST(:d AS integer) / 14.0 AS float8) AS closeness_log,
      CAST(0.5 AS float8) AS last_interaction_log_strength) AS v
  WHERE contacts_contact.id = v.id;
COMMIT;
"""


# The same work written as plainly as SQL allows: VALUES instead of a JSON parameter,
# the messageId claim and the contact upsert as two statements, no API-key look-up. A
# second ceiling, higher than natsite's own statements can reach.
PGBENCH_PLAIN_SCRIPT = """\
\\set k random(0, {contacts} - 1)
\\set d random(0, 364)
\\set m random(1, 1000000000000)
BEGIN;
INSERT INTO ingest_processedmessage (workspace_id, message_id, received_at)
  VALUES ({workspace}, 'pgbench-' || :client_id || '-' || :m, now())
  ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id;
INSERT INTO contacts_contact (workspace_id, email, name, user_id, traits, trait_times, first_seen_at, created_at)
  VALUES ({workspace}, 'pgbench' || :k || '@example.com', '', 'user-' || :k, '{{}}', '{{}}', now(), now())
  ON CONFLICT (workspace_id, email) DO UPDATE SET email = excluded.email
  RETURNING id AS contact_id, traits, trait_times \\gset
INSERT INTO contacts_interaction (workspace_id, contact_id, day, occurred_at, last_occurred_at, description, url, event_count)
  VALUES ({workspace}, :contact_id, current_date - CAST(:d AS integer), now() - CAST(:d AS integer) * interval '1 day',
          now() - CAST(:d AS integer) * interval '1 day',
          'https://app.example.com/p/1', 'https://app.example.com/p/1', 1)
  ON CONFLICT (contact_id, day) DO UPDATE SET
    event_count = contacts_interaction.event_count + 1,
    description = CASE WHEN excluded.occurred_at < contacts_interaction.occurred_at
                       THEN excluded.description ELSE contacts_interaction.description END,
    url = CASE WHEN excluded.occurred_at < contacts_interaction.occurred_at
               THEN excluded.url ELSE contacts_interaction.url END,
    occurred_at = LEAST(contacts_interaction.occurred_at, excluded.occurred_at),
    last_occurred_at = GREATEST(contacts_interaction.last_occurred_at, excluded.last_occurred_at)
  RETURNING event_count;
UPDATE contacts_contact SET
    name = 'First' || :k || ' Bench',
    traits = '{{"email": "pgbench@example.com", "firstName": "First", "lastName": "Bench", "plan": "pro", "logins": 1}}',
    trait_times = '{{"email": "2026-01-01T00:00:00.000000Z", "firstname": "2026-01-01T00:00:00.000000Z", "lastname": "2026-01-01T00:00:00.000000Z", "plan": "2026-01-01T00:00:00.000000Z", "logins": "2026-01-01T00:00:00.000000Z"}}',
    closeness_log = 52000.0 + CAST(:d AS integer) / 14.0,
    last_interaction_day = current_date - CAST(:d AS integer),
    last_interaction_log_strength = 0.5
  WHERE id = :contact_id;
COMMIT;
"""


def pgbench(database_url, workspace_id, prefix, *, contacts, seconds, clients=8, plain=False):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        template = PGBENCH_PLAIN_SCRIPT if plain else PGBENCH_SCRIPT
        script.write(template.format(contacts=contacts, workspace=workspace_id, prefix=prefix))
    meter = CpuMeter()  # pgbench is the load generator; the app is stopped by now
    try:
        done = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script.name,
             "-d", database_url],
            capture_output=True, text=True, check=True,
        )
    finally:
        os.unlink(script.name)
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", done.stdout).group(1))
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    return {
        "phase": f"pgbench {'plain SQL' if plain else 'natsite SQL'}, {clients} clients",
        "events_per_s": tps,
        "avg_ms": float(latency.group(1)) if latency else None,
        "database_cpu_ms": meter.per_event_ms(transactions)[1],
        "client_cpu_ms": 1000 * meter.generator_seconds() / transactions,
        "stolen_pct": meter.steal.percent(),
    }


# --- import_events ------------------------------------------------------------------------


def import_events_exists() -> bool:
    return (ROOT / "ingest" / "management" / "commands" / "import_events.py").exists()


DIRECT_IMPORT = """
import json, sys, time, django
django.setup()
from contacts.models import Workspace
from ingest.services import ingest_messages
workspace = Workspace.objects.get(slug=sys.argv[2])
lines = open(sys.argv[1]).read().splitlines()
started = time.perf_counter()
accepted = 0
for i in range(0, len(lines), 1000):
    results = ingest_messages(workspace=workspace, raw_messages=[json.loads(l) for l in lines[i:i + 1000]])
    accepted += sum(1 for r in results if r.accepted)
print(f"ELAPSED {time.perf_counter() - started:.3f} ACCEPTED {accepted}")
"""


def run_import(env, path, slug, events):
    """events/s of import_events (or of ingest_messages in chunks of 1,000)."""
    if import_events_exists():
        started = time.perf_counter()
        subprocess.run(
            [PYTHON, "manage.py", "import_events", str(path), "--workspace", slug],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # The command's own start-up (Django set-up) is included: this is what a user waits for.
        return events / (time.perf_counter() - started), "import_events"
    done = subprocess.run(
        [PYTHON, "-c", DIRECT_IMPORT, str(path), slug], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    elapsed = float(re.search(r"ELAPSED ([\d.]+)", done.stdout).group(1))
    return events / elapsed, "ingest_messages in chunks of 1,000"


# --- set-up -------------------------------------------------------------------------------------


def manage(env, *args) -> str:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout


def fresh_database(env, slug) -> tuple[str, int]:
    """Migrates the (already empty) database and makes a workspace; returns (API key, workspace id)."""
    manage(env, "migrate", "--noinput", "-v", "0")
    key = manage(env, "createworkspace", "Bench", "--slug", slug).strip().splitlines()[-1]
    workspace_id = int(
        manage(env, "shell", "-v", "0", "-c", f"from contacts.models import Workspace; print(Workspace.objects.get(slug={slug!r}).pk)").strip()
    )
    return key, workspace_id


def recreate_postgres(database_url):
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def key_prefix(database_url, workspace_id) -> str:
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT prefix FROM ingest_apikey WHERE workspace_id = %s", [workspace_id]).fetchone()[0]


def wait_for_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not listen on port {port}")


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    return f"{cpus} CPUs ({model}); load average {' '.join(load)}"


# --- output ------------------------------------------------------------------------------------


def print_table(rows):
    print(
        f"{'phase':34} {'events/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'SQL/event':>9}"
        f" {'app CPU':>8} {'PG CPU':>8} {'gen CPU':>8} {'stolen':>7}  errors"
    )
    for row in rows:
        stolen = f"{row['stolen_pct']:6.0f}%" if "stolen_pct" in row else ""
        if "p50_ms" not in row:
            database = f"{row['database_cpu_ms']:6.3f}ms" if "database_cpu_ms" in row else ""
            print(
                f"{row['phase']:34} {row['events_per_s']:9.0f} {'':>8} {'':>8} {'':>8} {'':>9} {'':>8} {database:>8}"
                f" {'':>8} {stolen:>7}"
            )
            continue
        errors = ", ".join(f"{count}× {what}" for what, count in row["errors"].items()) or "-"
        print(
            f"{row['phase']:34} {row['events_per_s']:9.0f} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f}"
            f" {row['queries_per_event']:9.2f} {row['server_cpu_ms']:6.3f}ms {row['database_cpu_ms']:6.3f}ms"
            f" {row['loadgen_cpu_pct']:7.0f}% {stolen:>7}  {errors}"
        )


def ratio_rounds(args, auth, workspace_id, messages, use_wrk):
    """The single-message ratio, N times: each round takes natsite's best single-message
    rate over the concurrencies, then both pgbench ceilings, back to back, so that a
    machine whose speed drifts is compared with itself. Prints each round and the medians."""
    prefix = key_prefix(args.database_url, workspace_id)
    ratios, plain_ratios = [], []
    for round_number in range(1, args.ratio_rounds + 1):
        best, steal = 0.0, StolenMeter()
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            checkpoint(args.database_url)
            if use_wrk:
                row = closed_loop_wrk(args.port, auth, contacts=args.contacts, concurrency=concurrency, seconds=args.seconds)
            else:
                row = closed_loop(args.port, auth, messages, size=1, concurrency=concurrency, seconds=args.seconds)
            best = max(best, row["events_per_s"])
        checkpoint(args.database_url)
        own = pgbench(args.database_url, workspace_id, prefix, contacts=args.contacts, seconds=int(args.seconds))
        checkpoint(args.database_url)
        plain = pgbench(
            args.database_url, workspace_id, prefix, contacts=args.contacts, seconds=int(args.seconds), plain=True
        )
        ratios.append(best / own["events_per_s"])
        plain_ratios.append(best / plain["events_per_s"])
        print(f"round {round_number}: natsite {best:.0f}/s; ceilings {own['events_per_s']:.0f} (natsite's SQL),"
              f" {plain['events_per_s']:.0f} (plain); ratios {ratios[-1]:.0%}, {plain_ratios[-1]:.0%};"
              f" {steal.percent():.0f}% of the CPU stolen")
    print(f"median ratio over {len(ratios)} rounds: {statistics.median(ratios):.0%} of natsite's statements,"
          f" {statistics.median(plain_ratios):.0%} of plain SQL")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", 8109)))
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (one per core)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--seconds", type=float, default=8, help="length of each load phase")
    parser.add_argument("--concurrency", default="1,4,8,16", help="single-message client counts")
    parser.add_argument("--rate", type=int, default=200, help="messages/s offered in the open-loop phase")
    parser.add_argument("--contacts", type=int, default=20000, help="size of the contact pool")
    parser.add_argument("--import-events", type=int, default=50000, help="events in the import file")
    parser.add_argument("--skip", default="", help="comma-separated: single,batch,open,pgbench,import")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--python-client", action="store_true", help="send single messages from Python even with wrk")
    parser.add_argument(
        "--ratio-rounds", type=int, default=0,
        help="then measure the single-message ratio this many times, natsite and pgbench back to back each round",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    print(f"machine: {machine()}")
    use_wrk = wrk_available() and not args.python_client
    if not use_wrk:
        print("single messages from this script's Python client" + ("" if args.python_client else
              " (install wrk, Debian's package, for figures a Python client cannot cap)"))
    slug = "bench"
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DJANGO_SETTINGS_MODULE": "natsite.settings",
        "DEBUG": "0",
        "INGEST_RATE_LIMIT": "0",  # the per-key limit would cap the very thing measured
        "LOG_LEVEL": "WARNING",
    }
    recreate_postgres(args.database_url)
    key, workspace_id = fresh_database(env, slug)
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    rows = []

    server = subprocess.Popen(
        [GUNICORN, "bench.wsgi:application", "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.workers),
         "--threads", str(args.threads), "--worker-class", "gthread", "--keep-alive", "30", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    CpuMeter.server_pid = server.pid
    try:
        wait_for_port(args.port)
        messages = Messages(args.contacts, seed=1)
        closed_loop(args.port, auth, messages, size=1, concurrency=4, seconds=2)  # warm-up: connections, imports
        if "single" not in skip:
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                checkpoint(args.database_url)
                if use_wrk:
                    rows.append(closed_loop_wrk(
                        args.port, auth, contacts=args.contacts, concurrency=concurrency, seconds=args.seconds,
                    ))
                else:
                    rows.append(closed_loop(
                        args.port, auth, messages, size=1, concurrency=concurrency, seconds=args.seconds,
                    ))
                print_table(rows[-1:])
        if "batch" not in skip:
            for size, concurrency in ((100, 4), (1000, 4)):
                checkpoint(args.database_url)
                rows.append(closed_loop(args.port, auth, messages, size=size, concurrency=concurrency, seconds=args.seconds))
                print_table(rows[-1:])
        if "open" not in skip:
            checkpoint(args.database_url)
            rows.append(open_loop(args.port, auth, messages, rate=args.rate, seconds=args.seconds))
            print_table(rows[-1:])
        if args.ratio_rounds:
            ratio_rounds(args, auth, workspace_id, messages, use_wrk)
    finally:
        server.terminate()
        server.wait(timeout=30)

    ceiling = None
    plain_ceiling = None
    if "pgbench" not in skip:
        prefix = key_prefix(args.database_url, workspace_id)
        checkpoint(args.database_url)
        ceiling = pgbench(args.database_url, workspace_id, prefix, contacts=args.contacts, seconds=int(args.seconds))
        rows.append(ceiling)
        print_table(rows[-1:])
        checkpoint(args.database_url)
        plain_ceiling = pgbench(
            args.database_url, workspace_id, prefix, contacts=args.contacts, seconds=int(args.seconds), plain=True
        )
        rows.append(plain_ceiling)
        print_table(rows[-1:])

    imports = []
    if "import" not in skip:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "events.jsonl"
            source = Messages(args.contacts, seed=2)
            path.write_text("\n".join(json.dumps(source.one()) for _ in range(args.import_events)) + "\n")
            recreate_postgres(args.database_url)
            fresh_database(env, slug)
            steal = StolenMeter()
            rate, how = run_import(env, path, slug, args.import_events)
            imports.append({"phase": f"import PostgreSQL ({how})", "events_per_s": rate, "stolen_pct": steal.percent()})
            sqlite_env = {**env, "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3"}
            fresh_database(sqlite_env, slug)
            steal = StolenMeter()
            rate, how = run_import(sqlite_env, path, slug, args.import_events)
            imports.append({"phase": f"import SQLite ({how})", "events_per_s": rate, "stolen_pct": steal.percent()})
        rows.extend(imports)
        print_table(imports)

    print()
    print(f"gunicorn: {args.workers} workers × {args.threads} threads (gthread); {args.seconds:g} s per phase;"
          f" {args.contacts} contacts over 365 days")
    print_table(rows)
    singles = [r for r in rows if r["phase"].startswith("single")]
    if ceiling and singles:
        best = max(singles, key=lambda r: r["events_per_s"])
        print(f"\nceiling (pgbench, natsite's statements): {ceiling['events_per_s']:.0f} events/s; best single-message"
              f" natsite: {best['events_per_s']:.0f} events/s ({best['phase']});"
              f" ratio natsite ÷ ceiling = {best['events_per_s'] / ceiling['events_per_s']:.0%}")
        if plain_ceiling:
            print(f"ceiling (pgbench, plain SQL): {plain_ceiling['events_per_s']:.0f} events/s;"
                  f" ratio natsite ÷ plain ceiling = {best['events_per_s'] / plain_ceiling['events_per_s']:.0%}")
    print(f"machine after the run: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
