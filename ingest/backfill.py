"""Reading a Segment export for import_events, in constant memory.

An export is JSON lines (one message per line; a line may also be a whole webhook
body: an array or {"batch": [...]}), or one JSON document: an array of messages,
{"batch": [...]} or a single message (several of them one after another are read
too). Plain or gzip, told apart by the first bytes.
Each message comes out as an Item that carries where it was found (a line number, or
an index in the document's array) so the summary can point at it.

Nothing here touches the database: the messages are checked by the webhook's rules,
in chunks, and import_events records each chunk through the webhook's own write path
(ingest.services.record_checked). The reading and checking run in a child process
(read_in_child), so that they take the other core while the import records.
"""

import codecs
import gzip
import io
import json
import multiprocessing
import os
import re
import signal
from dataclasses import dataclass

from django.conf import settings

from ingest.services import Checked, Result
from ingest.bodies import STRICT_JSON, IngestError, check_within_limits, parse_messages

GZIP_MAGIC = b"\x1f\x8b"
LINES, DOCUMENT, AUTO = "lines", "json", "auto"
LINE_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
READ_SIZE = 1 << 16
HEAD_BYTES = 1 << 16  # read ahead to tell JSON lines from a JSON document
_WHITESPACE = re.compile(r"[ \t\r\n]*")


@dataclass
class Refused:
    """A JSON value the webhook's rules refuse (NaN, 1e999): its message is rejected."""

    reason: str


class BrokenExport(Exception):
    """The export cannot be read further (a JSON document that stops making sense)."""


@dataclass
class Item:
    position: str  # "line 12", "line 3, index 0", "index 17"
    raw: object = None
    # (status code, message) when the input itself was unusable: not JSON, a line too long.
    rejection: tuple[int, str] | None = None


class CountingReader(io.RawIOBase):
    """The bytes read so far from the file itself (before decompression): the progress."""

    def __init__(self, source):
        self.source = source
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self.source.readinto(buffer)
        self.bytes_read += count or 0
        return count


class Replay(io.RawIOBase):
    """Bytes already read ahead (to tell the format), then the rest of the stream."""

    def __init__(self, head: bytes, rest):
        self.head = memoryview(head)  # sliced without copying
        self.rest = rest

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count] = self.head[:count]
            self.head = self.head[count:]
            return count
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class Source:
    stream: io.BufferedIOBase  # decompressed bytes
    counter: CountingReader
    total_bytes: int | None  # the file's size when known (not for a pipe)
    file: object = None  # the file opened here (not stdin), closed with the source

    def close(self):
        self.stream.close()
        if self.file is not None:
            self.file.close()


def open_source(path: str, stdin=None) -> Source:
    """Open FILE (or '-' for stdin) and undo gzip when the first bytes say so."""
    opened = None
    if path == "-":
        binary = stdin.buffer if hasattr(stdin, "buffer") else stdin
    else:
        binary = opened = open(path, "rb")  # noqa: SIM115 - closed by Source.close
    counter = CountingReader(binary)
    buffered = io.BufferedReader(counter, buffer_size=READ_SIZE)
    total = None
    try:
        info = os.fstat(binary.fileno())
        total = info.st_size if info.st_size and os.path.isfile(path) else None
    except (OSError, AttributeError, io.UnsupportedOperation):
        pass
    gzipped = buffered.peek(2)[:2] == GZIP_MAGIC
    if gzipped:
        stream = io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), buffer_size=READ_SIZE)
    else:
        stream = buffered
    if stream.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):  # as some Windows tools save
        stream.read(len(codecs.BOM_UTF8))
    return Source(stream=stream, counter=counter, total_bytes=total, file=opened)


def line_cap() -> int:
    """A line is read as one webhook body, so it has the body's cap."""
    return settings.INGEST_MAX_BODY_BYTES


def read_items(stream, *, fmt=AUTO, name=""):
    """Every message of the export, in order, as Items. Raises BrokenExport when a JSON
    document breaks off (JSON lines never do: a bad line is one rejected Item)."""
    head = b""
    if fmt == AUTO:
        fmt, head = _tell_format(stream, name)
    stream = io.BufferedReader(Replay(head, stream), buffer_size=READ_SIZE) if head else stream
    if fmt == LINES:
        return _read_lines(stream)
    return JsonDocumentReader(stream).items()


def _tell_format(stream, name):
    """JSON lines when the first non-blank line is a whole JSON value on its own (or the
    file is named .jsonl/.ndjson); otherwise a JSON document. Looks at most HEAD_BYTES
    ahead, and returns them to be read again."""
    if name.lower().endswith(LINE_SUFFIXES):
        return LINES, b""
    head = line = b""
    while len(head) < HEAD_BYTES:
        line = stream.readline(HEAD_BYTES)
        head += line
        if not line or line.strip():
            break
    first = line.strip()
    if first[:1] not in (b"[", b"{"):
        return LINES, head  # blank, or no JSON at all: reported line by line
    if line.endswith(b"\n") or len(line) < HEAD_BYTES:
        try:
            json.loads(first)
            return LINES, head
        except (ValueError, RecursionError):
            pass
    return DOCUMENT, head


def _read_lines(stream):
    cap = line_cap()
    number = 0
    while True:
        line = stream.readline(cap + 1)
        if not line:
            return
        number += 1
        position = f"line {number}"
        if len(line) > cap and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest without keeping it
                line = stream.readline(cap)
            yield Item(position, rejection=(413, f"Line larger than {cap} bytes"))
            continue
        if not line.strip():
            continue
        try:
            messages, is_batch = parse_messages(line)
        except IngestError as error:
            # The webhook's words are about a body; here the body is a line.
            message = str(error.detail).replace("Body", "Line", 1)
            yield Item(position, rejection=(error.status_code, message))
            continue
        if not is_batch:
            yield Item(position, raw=messages[0])
            continue
        for index, raw in enumerate(messages):
            yield Item(f"{position}, index {index}", raw=raw)


class JsonDocumentReader:
    """Streams the messages of one JSON document: an array, {"batch": [...]} or a single
    message. A sliding text buffer is decoded one value at a time with raw_decode, so
    memory stays bounded by the largest single message, never by the document."""

    def __init__(self, stream):
        self.stream = stream
        # Bytes that are not UTF-8 become U+FFFD rather than stopping the import.
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        # The webhook's own JSON rules (no NaN, no 1e999); the lenient decoder only finds
        # where a value it refused ends, so that one message is rejected, not the file.
        self.json = STRICT_JSON
        self.lenient = json.JSONDecoder()
        self.buffer = ""
        self.pos = 0
        self.eof = False
        # A value longer than this cannot be a message (it is more than a whole webhook body).
        self.max_value_chars = settings.INGEST_MAX_BODY_BYTES

    def items(self):
        """The messages of every top-level value, in order; several values one after
        another (concatenated JSON) are read the same way as one."""
        count = 0
        while start := self._peek():
            if start == "[":
                self.pos += 1
                values = self._array_values()
            elif start == "{":
                values = self._object_values()
            else:
                raise BrokenExport(f"Expected a JSON array or object, found {start!r}")
            for raw in values:
                if isinstance(raw, Refused):
                    yield Item(f"index {count}", rejection=(400, f"Message is not valid JSON: {raw.reason}"))
                else:
                    yield Item(f"index {count}", raw=raw)
                count += 1

    def _fill(self, at_least=READ_SIZE) -> bool:
        """Read more text, dropping what has been consumed; False at the end."""
        if self.eof:
            return False
        data = self.stream.read(max(at_least, READ_SIZE))
        self.eof = not data
        self.buffer = self.buffer[self.pos :] + self.utf8.decode(data, final=self.eof)
        self.pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not whitespace ('' at the end), not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def _expect(self, wanted: str, where: str) -> None:
        found = self._peek()
        if found != wanted:
            raise BrokenExport(f"Expected {wanted!r} {where}, found {found or 'the end of the file'!r}")
        self.pos += 1

    def _decode(self):
        """(value, end) at pos; a well-formed value the webhook refuses comes back Refused."""
        try:
            return self.json.raw_decode(self.buffer, self.pos)
        except json.JSONDecodeError:
            raise
        except ValueError as error:
            _, end = self.lenient.raw_decode(self.buffer, self.pos)  # JSONDecodeError: incomplete
            return Refused(str(error)[:120]), end

    def _value(self):
        self._peek()
        while True:
            try:
                value, end = self._decode()
            except (json.JSONDecodeError, RecursionError) as error:
                pending = len(self.buffer) - self.pos
                if self.eof or pending > self.max_value_chars:
                    raise BrokenExport(f"Not valid JSON: {str(error)[:120]}") from None
                self._fill(at_least=pending)  # double what is buffered: linear, not quadratic
                continue
            # A number that ends the buffer may go on in the next read.
            if end == len(self.buffer) and not self.eof:
                self._fill()
                continue
            self.pos = end
            return value

    def _array_values(self):
        """The values of an array whose '[' was consumed, up to and including its ']'."""
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()
            found = self._peek()
            self.pos += 1
            if found == "]":
                return
            if found != ",":
                raise BrokenExport(f"Expected ',' or ']' in the array, found {found or 'the end of the file'!r}")

    def _object_values(self):
        """{"batch": [...], ...} streams the batch; any other object is one message."""
        self._expect("{", "at the start of an object")
        fields = {}
        is_batch = False
        refused = None
        if self._peek() == "}":
            self.pos += 1
        else:
            while True:
                key = self._value()
                if not isinstance(key, str):
                    raise BrokenExport("Expected a field name in the JSON object")
                self._expect(":", "after a field name")
                if key == "batch" and not is_batch and self._peek() == "[":
                    is_batch = True
                    self.pos += 1
                    yield from self._array_values()
                else:
                    fields[key] = value = self._value()
                    if isinstance(value, Refused):
                        refused = value
                found = self._peek()
                self.pos += 1
                if found == "}":
                    break
                if found != ",":
                    raise BrokenExport(f"Expected ',' or '}}' in the object, found {found or 'the end of the file'!r}")
        if not is_batch:
            yield refused or fields


@dataclass
class Chunk:
    """Consecutive messages of the export, checked by the webhook's rules and not yet
    recorded: where each was found, and its rejection or its normalized message."""

    positions: list[str]
    checked: Checked
    bytes_read: int  # of the file, once the chunk was read: the progress


def checked_chunks(source: Source, *, fmt=AUTO, name="", chunk_size=1000):
    """The export's messages in Chunks of chunk_size. When the export cannot be read
    further (BrokenExport, OSError, EOFError), the chunk of the messages read before is
    still given, then the error raised."""
    items = []
    try:
        for item in read_items(source.stream, fmt=fmt, name=name):
            items.append(item)
            if len(items) >= chunk_size:
                yield _checked_chunk(items, source)
                items = []
    except (BrokenExport, OSError, EOFError):
        if items:
            yield _checked_chunk(items, source)
        raise
    if items:
        yield _checked_chunk(items, source)


def _checked_chunk(items: list[Item], source: Source) -> Chunk:
    unreadable = {
        position: Result(status="rejected", code=item.rejection[0], message=item.rejection[1])
        for position, item in enumerate(items)
        if item.rejection is not None
    }
    checked = check_within_limits([item.raw for item in items], rejected=unreadable)
    return Chunk([item.position for item in items], checked, source.counter.bytes_read)


@dataclass
class _Failed:
    error: BaseException


def _produce_into(pipe, produce) -> None:
    """The child's work: send every item of produce(), then None, or the error that
    stopped it. The pipe's buffer keeps the child about one item ahead of the parent."""
    try:
        for item in produce():
            pipe.send(item)
    except Exception as error:  # raised again in the parent, where the import reports it
        try:
            pipe.send(_Failed(error))
        except Exception:  # an error that cannot be pickled
            pipe.send(_Failed(RuntimeError(f"{type(error).__name__}: {error}")))
        return
    pipe.send(None)


class ReaderGone(OSError):
    """The reader process ended without a word (killed, or out of memory)."""


def read_in_child(produce):
    """The items of produce() (an iterable it makes), made in a forked child process:
    the caller works on one while the child makes the next, on another core. The child
    needs no set-up of its own (it is a copy of this process, stdin included) and never
    touches the database; it ends with os._exit, so nothing of the parent's (database
    connections, files) is closed or flushed from it. An error in the child is raised
    here, after the items made before it; closing this generator early ends the child.
    Where processes cannot fork, produce() simply runs here."""
    if not hasattr(os, "fork"):
        yield from produce()
        return
    receiver, sender = multiprocessing.Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
            receiver.close()
            _produce_into(sender, produce)
            status = 0
        finally:
            os._exit(status)
    sender.close()
    try:
        while True:
            try:
                item = receiver.recv()
            except EOFError:
                raise ReaderGone("the reader process ended unexpectedly") from None
            if item is None:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        receiver.close()  # a child still writing gets EPIPE and ends
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
