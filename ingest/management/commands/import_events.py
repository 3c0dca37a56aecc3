"""import_events FILE --workspace SLUG: backfill a Segment export through the webhook's
own write path, in chunks, streamed in constant memory. A child process reads and
checks the next chunk (ingest.backfill) while this one records the current one.

Idempotent: every message is claimed by its messageId (a content digest when it has
none), so importing a file twice, or after a partial run, changes nothing more.
"""

import sys
import time
from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from contacts.management.lookups import workspace_by_slug
from contacts.models import Contact
from ingest.backfill import AUTO, DOCUMENT, LINES, BrokenExport, checked_chunks, open_source, read_in_child
from ingest.parallel import TwoConnectionRecorder, can_record_in_parallel
from ingest.services import ACCEPTED
from natsite.db import analyze_if_grown, bulk_loading
from natsite.gc_settle import live_objects_frozen

STATUSES = (*ACCEPTED, "rejected")


def _plain(text):
    """No colour: Django paints stderr red on a terminal, but progress is no error."""
    return text


class Command(BaseCommand):
    # No system checks before an import: they load every URL's view (the webhook's, DRF's,
    # the admin's) to check the URLs, a third of the command's start-up, which a user waits
    # for at every file. `manage.py check`, migrate and the server's start run them.
    requires_system_checks = []
    help = (
        "Import a Segment export (JSON lines, a JSON array or {\"batch\": [...]}; plain or gzip; "
        "'-' for stdin) into a workspace, with the webhook's rules. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the export to read, or '-' for stdin")
        parser.add_argument("--workspace", required=True, help="the workspace's slug")
        parser.add_argument(
            "--format", choices=(AUTO, LINES, DOCUMENT), default=AUTO,
            help="auto (default): JSON lines when the first line is a whole JSON value, else one JSON document",
        )
        parser.add_argument("--chunk-size", type=int, default=1000, help="messages recorded per call (default 1000)")
        parser.add_argument("--show-errors", type=int, default=20, help="how many errors the summary lists (default 20)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
        parser.add_argument(
            "--connections", type=int, choices=(1, 2), default=2,
            help="PostgreSQL: record each chunk's contacts split over this many connections (default 2)",
        )

    def handle(self, *args, file, workspace, format, chunk_size, show_errors, no_progress, connections, **options):
        if chunk_size < 1:
            raise CommandError("--chunk-size must be at least 1")
        target = workspace_by_slug(workspace)
        try:
            source = open_source(file, stdin=sys.stdin)
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror or error}") from None

        # A full collection then walks the import's own objects only; SQLite checkpoints
        # its log less often (natsite/db.py).
        with live_objects_frozen(), bulk_loading():
            self.import_file(target, source, file, format, chunk_size, show_errors, no_progress, connections)

    def import_file(self, target, source, file, format, chunk_size, show_errors, no_progress, connections=1):
        recorder = TwoConnectionRecorder(target, split=connections == 2 and can_record_in_parallel())
        tally = Tally(show_errors)
        progress = Progress(self.stderr, source.total_bytes, enabled=not no_progress)
        chunks = read_in_child(lambda: checked_chunks(source, fmt=format, name=file, chunk_size=chunk_size))
        stopped = None
        try:
            for chunk in chunks:
                self.record(recorder, chunk, tally)
                # A first import outgrows the contacts' statistics within seconds: the
                # look-up of a chunk's contacts by (workspace, email) depends on them.
                analyze_if_grown(Contact, ["workspace", "email"])
                progress.update(tally.total, chunk.bytes_read)
        except BrokenExport as error:
            stopped = f"The export breaks off after {tally.total} messages: {error}"
            if format == AUTO:
                stopped += " (if the file is JSON lines, pass --format lines)"
        except (OSError, EOFError) as error:  # a truncated or corrupt gzip stream
            stopped = f"Cannot read {file} after {tally.total} messages: {error}"
        except DatabaseError as error:
            stopped = f"Database error after {tally.total} messages: {error}"
        except KeyboardInterrupt:
            stopped = f"Interrupted after {tally.total} messages"
        finally:
            chunks.close()  # ends the reader process if the import stopped early
            recorder.close()
            progress.finish(tally.total)
            source.close()

        self.stdout.write(tally.summary(file, target, progress.elapsed()))
        if stopped:
            raise CommandError(f"{stopped}. Running the same import again resumes: what is recorded is skipped.")

    def record(self, recorder, chunk, tally):
        """Record one checked chunk as the webhook records a batch (split over two
        connections, when the recorder can)."""
        for position, result in zip(chunk.positions, recorder.record(chunk.checked)):
            tally.add(position, result)


class Tally:
    """Counts per status, rejections per status code and per reason, and the first errors."""

    REASONS_KEPT = 100  # distinct reasons counted one by one; the rest as "other reasons"
    REASONS_SHOWN = 10

    def __init__(self, errors_kept):
        self.statuses = Counter()
        self.codes = Counter()
        self.reasons = Counter()
        self.first_seen = {}
        self.errors = []
        self.errors_kept = errors_kept

    @property
    def total(self):
        return sum(self.statuses.values())

    def add(self, position, result):
        self.statuses[result.status] += 1
        if result.accepted:
            return
        self.codes[result.code] += 1
        reason = f"{result.code} {result.message}"
        if reason not in self.reasons and len(self.reasons) >= self.REASONS_KEPT:
            reason = "(other reasons)"
        self.reasons[reason] += 1
        self.first_seen.setdefault(reason, position)
        if len(self.errors) < self.errors_kept:
            self.errors.append(f"{position}: {reason}")

    def summary(self, file, workspace, elapsed):
        total = self.total
        rate = f", {total / elapsed:,.0f} messages/s" if elapsed > 0 and total else ""
        messages = "message" if total == 1 else "messages"
        lines = [f"Imported {file} into workspace {workspace.slug}: {total:,} {messages} in {elapsed:.1f} s{rate}."]
        for status in STATUSES:
            line = f"  {status:<15}{self.statuses[status]:>12,}"
            if status == "rejected" and self.codes:
                line += "  (" + ", ".join(f"{code}: {n:,}" for code, n in sorted(self.codes.items())) + ")"
            lines.append(line)
        if self.reasons:
            lines.append("Rejected, by reason:")
            for reason, count in self.reasons.most_common(self.REASONS_SHOWN):
                lines.append(f"  {count:>10,} × {reason}  (first: {self.first_seen[reason]})")
            if len(self.reasons) > self.REASONS_SHOWN:
                lines.append(f"  ... and {len(self.reasons) - self.REASONS_SHOWN} more reasons")
        if self.errors:
            lines.append("First errors:")
            lines.extend(f"  {error}" for error in self.errors)
            hidden = self.statuses["rejected"] - len(self.errors)
            if hidden > 0:
                lines.append(f"  ... and {hidden:,} more")
        return "\n".join(lines)


class Progress:
    """A progress bar on a terminal (bytes read of the file, messages/s); on anything
    else a quiet line every LINE_EVERY seconds, so logs stay readable."""

    BAR_WIDTH = 24
    REDRAW_EVERY = 0.2
    LINE_EVERY = 10.0

    def __init__(self, out, total_bytes, enabled=True):
        self.out = out
        self.total_bytes = total_bytes  # the file's size, when known
        self.bytes_read = 0
        self.enabled = enabled
        self.terminal = enabled and out.isatty()
        self.started = self.shown = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.started

    def update(self, messages, bytes_read=None, final=False):
        if bytes_read is not None:
            self.bytes_read = bytes_read
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.shown < (self.REDRAW_EVERY if self.terminal else self.LINE_EVERY):
            return
        self.shown = now
        read, total = self.bytes_read, self.total_bytes
        rate = messages / max(now - self.started, 1e-9)
        if self.terminal:
            done = min(read / total, 1.0) if total else 0.0
            filled = int(done * self.BAR_WIDTH)
            bar = f"{done:4.0%} [{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] " if total else ""
            size = f"{_size(read)} of {_size(total)}" if total else f"{_size(read)} read"
            self.out.write(f"\r{bar}{size} · {messages:,} messages · {rate:,.0f}/s\033[K", _plain, ending="")
            self.out.flush()
        else:
            share = f" ({read / total:.0%} of {_size(total)})" if total else ""
            self.out.write(f"import_events: {_size(read)} read{share}, {messages:,} messages, {rate:,.0f}/s")

    def finish(self, messages):
        if self.terminal:
            self.update(messages, final=True)
            self.out.write("", _plain)


def _size(count):
    for unit in ("B", "KB", "MB"):
        if count < 1024:
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} GB"
