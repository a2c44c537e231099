"""The recording file: a writer that keeps every line whole on disk, and a streaming reader.

A recording is JSON Lines, UTF-8: a header line ``{"format": "kepler-top-recording",
"version": 1, "node", "source", "started"}``, then one snapshot document a line. A name ending
in ``.gz`` is gzip-compressed.

The writer makes each line durable when it is written: plain files get one ``write`` and an
``fsync``; gzip files get a sync flush of the compressor after each line (so everything written
so far decompresses, even without the gzip trailer a crash leaves out) and the same ``fsync``.
A line that fails to write (full disk) is cut back off the file, so earlier lines stay intact.

The reader streams: it holds one line at a time. It drops a final line cut short by a crash
with a warning, refuses a file whose header it does not know, and never drops a complete line.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any, Callable, Iterator

from kepler_top.errors import KeplerTopError
from kepler_top.snapshot import Snapshot

log = logging.getLogger(__name__)

FORMAT = "kepler-top-recording"
VERSION = 1
_CHUNK = 1 << 16
# The writer puts "timestamp" second in each line; finding it without parsing the whole
# document makes a jump through a long recording cheap.
_TIMESTAMP = re.compile(rb'"timestamp":\s*"([^"]+)"')


class RecordingError(KeplerTopError):
    """A recording that cannot be read or written; the message names the file."""


def now_rfc3339() -> str:
    """The wall time now, RFC 3339 UTC with milliseconds (the snapshots' form)."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def is_gzip_name(path: str) -> bool:
    """True where the file's name says it is gzip-compressed."""
    return path.endswith(".gz")


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a recording."""

    node: str | None
    source: str | None
    started: str | None
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "node": self.node,
                "source": self.source, "started": self.started}


def _write_fix(err: OSError, lines: int) -> str:
    kept = f"the {lines} snapshot(s) written before are intact"
    if err.errno == errno.ENOSPC:
        return f"the disk is full; free space or record elsewhere ({kept})"
    if err.errno == errno.EDQUOT:
        return f"the disk quota is used up; free space or record elsewhere ({kept})"
    return f"check the disk and the path ({kept})"


class RecordingWriter:
    """Appends snapshots to a new recording, one whole line at a time.

    Args:
        path: the file to create; it must not exist yet. ``.gz`` means gzip.
        node, source: what the header says was recorded.
        fsync: call fsync after each line. On by default: at one line per interval (seconds)
            it costs little, and it is what makes a line survive a power cut, not just a crash.
    """

    def __init__(self, path: str, *, node: str | None, source: str | None,
                 fsync: bool = True, append: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.lines = 0  # snapshot lines written (the header not counted)
        self.gzip = is_gzip_name(path)
        self._fd = -1
        if os.path.isdir(path):
            raise RecordingError(f"{path} is a directory",
                                 f"give a file name, e.g. {os.path.join(path, 'run.jsonl.gz')}")
        if append and os.path.exists(path):
            self.header, self.bytes = _ready_to_append(path, node)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        else:
            self.header = Header(node=node, source=source, started=now_rfc3339())
            self.bytes = 0  # bytes on disk, all of them whole lines (or sync-flushed gzip)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise RecordingError(f"{path} already exists",
                                 "choose another name, append to it (--append), or remove it"
                                 ) from None
        except OSError as e:
            raise RecordingError(f"cannot create {path}: {e.strerror}",
                                 "give a path in a directory that exists and is writable"
                                 ) from None
        self._ident = _identity(os.fstat(self._fd))
        # Appending to gzip starts a new gzip member: concatenated members are one gzip file.
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31) if self.gzip else None
        if not (flags & os.O_APPEND):
            self._put(self.header.to_dict(), count=False)

    def write(self, snap: Snapshot | dict[str, Any]) -> None:
        """Append one snapshot (or its document) as one line, durable when this returns."""
        doc = snap.to_dict() if isinstance(snap, Snapshot) else snap
        self._put(doc, count=True)

    def _put(self, doc: dict[str, Any], *, count: bool) -> None:
        if self._fd < 0:
            raise RecordingError(f"{self.path} is closed", "start a new recording")
        line = (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        data = line
        before = None
        if self._zip is not None:
            # A sync flush ends the deflate block on a byte boundary: a reader can decompress
            # up to here even though the stream has no end yet.
            before = self._zip.copy()
            data = self._zip.compress(line) + self._zip.flush(zlib.Z_SYNC_FLUSH)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            self._zip = before
            self._fail(e)
        self.bytes += len(data)
        if count:
            self.lines += 1
        self._check_still_there()

    def _fail(self, err: OSError) -> None:
        # Cut the partial line back off, so the file ends on the last whole line; then end
        # the gzip stream there if the disk lets us (a reader copes without the end, too).
        try:
            os.ftruncate(self._fd, self.bytes)
            if self._zip is not None:
                os.write(self._fd, self._zip.flush(zlib.Z_FINISH))
        except OSError:
            pass
        self._close_fd()
        raise RecordingError(f"cannot write {self.path}: {err.strerror}",
                             _write_fix(err, self.lines)) from None

    def _check_still_there(self) -> None:
        # Writes into a file whose directory was removed succeed and vanish with it; a stat
        # per line (once an interval) tells the user at once rather than at the end.
        try:
            same = _identity(os.stat(self.path)) == self._ident
        except OSError:
            same = False
        if not same:
            self._close_fd()
            raise RecordingError(
                f"{self.path} was removed (or its directory) while recording",
                "record to a path that stays; lines written so far are only in the open file")

    def close(self) -> None:
        """Finish the file (the gzip trailer) and close it. Safe to call twice."""
        if self._fd < 0:
            return
        try:
            if self._zip is not None:
                tail = self._zip.flush(zlib.Z_FINISH)
                os.write(self._fd, tail)
                self.bytes += len(tail)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            # Every line is already on disk; only the gzip trailer is missing, which the
            # reader accepts.
            log.warning("closing %s: %s", self.path, e.strerror)
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ready_to_append(path: str, node: str | None) -> tuple[Header, int]:
    """Check that a recording can take more lines; return its header and size.

    A plain file that ends in a line cut short is cut back to its last whole line first (a
    reader would drop that line anyway). A gzip file cut short is refused: lines appended
    after its torn end could not be read.
    """
    problems: list[str] = []
    with RecordingReader(path, warn=problems.append) as reader:
        for _ in reader._lines:
            pass
        header = reader.header
    if is_gzip_name(path) and problems:
        raise RecordingError(f"{path} was cut short ({problems[0]})",
                             "record to a new file; this one still reads up to its end")
    if node is not None and header.node not in (None, node):
        raise RecordingError(f"{path} records node {header.node}, not {node}",
                             "record this node to another file")
    if not is_gzip_name(path):
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            keep = size
            while keep > 0:
                f.seek(max(0, keep - _CHUNK))
                block = f.read(keep - max(0, keep - _CHUNK))
                at = block.rfind(b"\n")
                if at >= 0:
                    keep = keep - len(block) + at + 1
                    break
                keep = max(0, keep - _CHUNK)
            if keep != size:
                f.seek(keep)
                try:
                    json.loads(f.read())
                except ValueError:
                    log.warning("%s: dropping a last line cut short before appending", path)
                    f.truncate(keep)
                else:
                    # Whole but for its newline (a crash between the two): keep it.
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
    return header, os.path.getsize(path)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _plain_chunks(f) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


class _GzipChunks:
    """Decompressed chunks of a gzip file that may be cut short (no trailer, torn bytes)."""

    def __init__(self, f, path: str) -> None:
        self.f = f
        self.path = path
        self.problem: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        d = zlib.decompressobj(31)
        started = False
        in_member = False  # inside a gzip member whose end has not been read
        while raw := self.f.read(_CHUNK):
            while raw:
                try:
                    out = d.decompress(raw)
                except zlib.error as e:
                    if not started:
                        raise RecordingError(
                            f"{self.path} is not gzip-compressed, though its name ends in .gz",
                            "rename it without .gz, or give the compressed file") from None
                    self.problem = f"the compressed data is damaged ({e}); read up to there"
                    return
                started = in_member = True
                if out:
                    yield out
                raw = b""
                if d.eof:
                    # Another gzip member may follow (gzip files may be concatenated).
                    raw = d.unused_data
                    d = zlib.decompressobj(31)
                    in_member = False
        if in_member:
            self.problem = "the compressed stream ends without its trailer (writer killed?)"


@dataclass(slots=True)
class Line:
    """One complete line of a recording and where it sits (1-based line number)."""

    number: int
    data: bytes


class RecordingReader:
    """Streams the snapshots of a recording, holding one line at a time.

    Args:
        path: the recording (``.gz`` for gzip).
        warn: called with one line of text for each problem that does not stop the reading
            (a final line cut short, a damaged line); logs a warning when None.

    Raises RecordingError on open for a missing file, an empty one, or an unknown header.
    """

    def __init__(self, path: str, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._warn = warn or (lambda text: log.warning("%s", text))
        self.dropped = 0  # lines that could not be read
        self.position = 0
        self.skip_before: datetime | None = None
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise RecordingError(f"cannot open {path}: {e.strerror}",
                                 "give the path of a kepler-top recording") from None
        self._gz = _GzipChunks(self._file, path) if is_gzip_name(path) else None
        self._lines = self._split(self._gz if self._gz is not None else _plain_chunks(self._file))
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def warn(self, text: str) -> None:
        self._warn(f"{self.path}: {text}")

    def _read_header(self) -> Header:
        first = next(self._lines, None)
        if first is None:
            raise RecordingError(f"{self.path} is empty",
                                 "give a recording written by kepler-top record")
        try:
            doc = json.loads(first.data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            if first.data.lstrip().startswith(b'{"format":"%s"' % FORMAT.encode()):
                raise RecordingError(f"{self.path}: its header line is cut short",
                                     "the writer stopped before any snapshot; record again")
            raise RecordingError(f"{self.path} is not a kepler-top recording (no header line)",
                                 "give a file written by kepler-top record")
        if doc.get("version") != VERSION:
            raise RecordingError(
                f"{self.path} is a kepler-top recording of version {doc.get('version')!r}, "
                f"and this kepler-top reads version {VERSION}",
                "read it with the kepler-top that wrote it, or a newer one")
        return Header(node=doc.get("node"), source=doc.get("source"),
                      started=doc.get("started"))

    def _split(self, chunks) -> Iterator[Line]:
        number = 0
        rest = b""
        for chunk in chunks:
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                number += 1
                if part.strip():
                    yield Line(number, part)
        if self._gz is not None and self._gz.problem:
            self.warn(self._gz.problem)
        if rest.strip():
            number += 1
            # A last line without its newline is whole if it parses (a crash right between
            # the document and its newline); otherwise it was cut short.
            try:
                json.loads(rest)
            except ValueError:
                if number == 1:
                    # Nothing but one unended line: no header cut short, just another file.
                    # The header check names it.
                    yield Line(number, rest)
                    return
                self.dropped += 1
                self.warn(f"line {number} is cut short (the writer stopped mid-line); dropped")
                return
            yield Line(number, rest)

    def documents(self) -> Iterator[dict[str, Any]]:
        """The snapshot documents, in order; a damaged line is skipped with a warning.

        While ``skip_before`` is set, lines stamped before it are passed over by their
        timestamp alone, without parsing them (a jump through a long recording).
        ``position`` counts the snapshot lines passed so far, yielded or skipped.
        """
        for line in self._lines:
            self.position += 1
            if self.skip_before is not None:
                m = _TIMESTAMP.search(line.data, 0, 200)
                try:
                    if m is not None and parse_time(m.group(1).decode()) < self.skip_before:
                        continue
                except ValueError:
                    pass
                self.skip_before = None
            try:
                doc = json.loads(line.data)
            except ValueError:
                self.dropped += 1
                self.warn(f"line {line.number} is not JSON; skipped")
                continue
            why = snapshot_problem(doc)
            if why is not None:
                self.dropped += 1
                self.warn(f"line {line.number} is not a snapshot ({why}); skipped")
                continue
            yield doc

    def snapshots(self) -> Iterator[Snapshot]:
        """The snapshots, rebuilt with ``Snapshot.from_dict``."""
        for doc in self.documents():
            try:
                yield Snapshot.from_dict(doc)
            except (ValueError, KeyError, TypeError) as e:
                self.dropped += 1
                self.warn(f"a snapshot at {doc.get('timestamp')} cannot be read ({e}); skipped")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset; no zone means UTC) as an aware datetime."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


_DURATION = re.compile(r"^\+(\d+(?:\.\d*)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# +1h30m, +2m30s: several parts, each with its unit.
_COMPOUND = re.compile(r"\+(?:\d+(?:\.\d*)?[smhd]){2,}")
_PART = re.compile(r"(\d+(?:\.\d*)?)([smhd])")


def parse_moment(text: str, *, start: datetime) -> datetime:
    """A moment in a recording, as a user gives it on a flag or in the replay's jump box.

    Accepts an RFC 3339 time; ``HH:MM`` or ``HH:MM:SS`` (UTC, on the day the recording
    starts, or the next day when that time, as precise as written, is over before the
    start); or ``+90s``, ``+15m``, ``+2h``, ``+1d``, ``+1h30m`` after the start. Raises
    ValueError for anything else.
    """
    text = text.strip()
    m = _DURATION.match(text)
    seconds = None
    if m:
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    elif _COMPOUND.fullmatch(text):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _PART.findall(text))
    if seconds is not None:
        try:
            return start + timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{text} is further than any date") from None
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?", text):
        parts = text.split(":")
        seconds = float(parts[2]) if len(parts) > 2 else 0.0
        clock = time(int(parts[0]), int(parts[1]), int(seconds),
                     min(999_999, round((seconds % 1) * 1e6)))
        when = datetime.combine(start.date(), clock, tzinfo=timezone.utc)
        # The time as precise as it was written: `16:34` is the whole minute, so a recording
        # that starts at 16:34:36 is in it, today, not tomorrow.
        digits = len(parts[2].partition(".")[2]) if len(parts) > 2 else 0
        precision = timedelta(seconds=10.0 ** -digits if len(parts) > 2 else 60)
        if when + precision <= start:
            when += timedelta(days=1)
        return when
    return parse_time(text)


_WORKLOAD_LISTS = ("processes", "containers", "pods", "namespaces", "vms")


def _energy_problem(where: str, item: Any, fields: tuple[str, ...]) -> str | None:
    if not isinstance(item, dict):
        return f"{where} is not an object"
    for name in fields:
        value = item.get(name)
        if value is None:
            continue  # unknown is null, and allowed
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where}.{name} is not a number"
        if not math.isfinite(value) or (name.endswith("joules") and value < 0):
            return f"{where}.{name} is {value!r}"
    return None


def snapshot_problem(doc: Any) -> str | None:
    """Why a JSON value cannot be a snapshot document, or None when its shape is right.

    Checks what readers of a recording use (times, intervals, energy figures and the
    lists), so that a line damaged into other valid JSON is skipped with a reason instead
    of being summed: cumulative joules are never negative, figures are finite numbers.
    """
    if not isinstance(doc, dict):
        return "not an object"
    try:
        parse_time(doc["timestamp"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return "no valid timestamp"
    interval = doc.get("interval_seconds")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
            math.isfinite(interval) and interval >= 0):
        return "interval_seconds is not a non-negative number"
    node = doc.get("node")
    energy = ("joules", "watts", "active_joules", "active_watts", "idle_joules", "idle_watts")
    why = _energy_problem("node", node, energy)
    if why:
        return why
    zones = node.get("zones", {})
    if not isinstance(zones, dict):
        return "node.zones is not an object"
    for zone, figures in zones.items():
        why = _energy_problem(f"node.zones.{zone}", figures, energy)
        if why:
            return why
    for name in _WORKLOAD_LISTS:
        items = doc.get(name, [])
        if not isinstance(items, list):
            return f"{name} is not a list"
        for i, item in enumerate(items):
            why = _energy_problem(f"{name}[{i}]", item, ("joules", "watts"))
            if why:
                return why
    return None
