"""The usage journal: every request on local disk before its response completes, so that a
worker killed at any moment (SIGKILL, the OOM killer) loses no record.

Each worker appends to files of its own in USAGE_JOURNAL_DIR, one JSON line per `write()`
(O_APPEND): a "started" line when a request is admitted, its whole record when it finishes. The
usage writer (accounts.usage) says which records the database has taken; a file whose lines are
all settled (each start finished, each record written) is emptied, or deleted once a newer file
has taken over (past ROTATE_BYTES), so the journal stays small.

A disk error (the disk full, the folder unwritable) never stops the proxy: logged once, until
that operation works again; a record the journal could not take stays in memory, a file that
could not be emptied or handed over goes on being written.

A worker holds an exclusive `flock` on each of its files while it lives: a file that another
process can lock belongs to a dead worker. A worker that starts claims those, replays them (the
usage writer's part) and deletes them. A file's name carries the `fingerprint()` of the database
its records belong to: instances of other databases sharing the folder leave it alone. Files
named before fingerprints (usage-<pid>-<id>.jsonl) say no database: whoever starts replays them.

Files reach the disk every USAGE_JOURNAL_FSYNC seconds: a machine crash can lose what was written
since; a process dying loses nothing (the kernel has the data).

While the database is away the writer's memory stays bounded (USAGE_QUEUE_MAX): records past
the bound are "spilled", kept in the journal only, from where the writer reads them back in
batches (`spill()`, `read_spill()`, `spill_written()`) once the records in memory are written.
Once a file spills, every record after in it does too, so what is to be read back is one
stretch of each file: from `read_at` to its end.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from accounts import runtime

logger = logging.getLogger("hfproxy.usage")

ROTATE_BYTES = 1 << 20
SUFFIX = ".jsonl"
STARTED, FINISHED = "s", "f"


def fingerprint(database: dict[str, Any] | None = None) -> str:
    """Which database a journal's records go to (the default one's unless told): its engine,
    name, host and port, hashed; never its password."""
    if database is None:
        database = settings.DATABASES["default"]
    identity = "\0".join(str(database.get(key) or "") for key in ("ENGINE", "NAME", "HOST", "PORT"))
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _owner(path: Path) -> str | None:
    """The fingerprint in a journal file's name (None: named before fingerprints)."""
    parts = path.name.removesuffix(SUFFIX).split("-")  # usage-<fingerprint>-<pid>-<id>
    return parts[1] if len(parts) == 4 else None


def _line(kind: str, fields: dict[str, Any]) -> bytes:
    # Two lines a request, on the event loop: orjson writes them several times faster than the
    # json module. Both escape newlines (and every control character) in strings: one line each.
    # UUIDs and datetimes are orjson's own (a datetime ISO 8601 with its "T", as fromisoformat
    # reads back); a Decimal becomes its string, as before.
    line = {"k": kind, **fields}
    try:
        return orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a lone surrogate (valid as a JSON escape, not UTF-8) that a client sent
        return json.dumps(line, default=str, separators=(",", ":")).encode() + b"\n"


class _Held:
    """A journal file open in this process, and locked by it."""

    path: Path
    fd: int

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.release()

    def release(self) -> None:
        os.close(self.fd)


class _File(_Held):
    """One journal file of this process, locked while it is open."""

    def __init__(self, folder: Path) -> None:
        name = f"usage-{fingerprint()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a name replays do not look at, then renamed: never claimed half-made.
        temporary = folder / f"{name}.tmp"
        self.fd = os.open(temporary, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.path = folder / f"{name}{SUFFIX}"
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, self.path)
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self.size = 0
        self.torn = False  # it ends in part of a line: the next line must go to a new file
        self.open_starts = 0  # started requests whose record is not written here or elsewhere
        self.unwritten = 0  # records here that the database has not taken
        self.dirty = False
        self.spilling = False  # the records from `read_at` on are in this file only
        self.read_at = 0
        self.spilled = 0  # of them, not read back and written yet
        self.spilled_since = 0.0  # about when the oldest of them ended (epoch seconds)

    def append(self, line: bytes) -> None:
        try:
            if os.write(self.fd, line) != len(line):
                raise OSError(errno.ENOSPC, "Short write to the usage journal")
        except OSError:
            # Part of the line would glue onto the next one, and replay skip both as torn.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                self.torn = True
            raise
        self.last_at = self.size
        self.size += len(line)
        self.dirty = True

    @property
    def settled(self) -> bool:
        return not self.open_starts and not self.unwritten  # spilled records are unwritten too


class Journal:
    """This process's journal. Its methods run on the event loop, except `sync()`."""

    def __init__(self) -> None:
        self._files: list[_File] = []  # the last one is written to
        self._started: dict[uuid.UUID, _File] = {}  # requests in flight: the file with their start
        self._held: dict[uuid.UUID, _File] = {}  # records not written yet: the file with each
        self._failing: set[str] = set()  # disk operations failing now (each logged once)

    @property
    def folder(self) -> Path:
        return Path(settings.USAGE_JOURNAL_DIR)

    @contextlib.contextmanager
    def _disk(self, doing: str) -> Iterator[None]:
        """Swallow a disk error so that the proxy serves on: logged once, until `doing` works again."""
        try:
            yield
        except OSError:
            self._failed(doing)
        else:
            self._failing.discard(doing)

    def _failed(self, doing: str) -> None:
        """In an `except OSError:` block: log the error, the first time `doing` fails."""
        if doing not in self._failing:
            logger.exception("Cannot %s the usage journal in %s", doing, self.folder)
        self._failing.add(doing)

    def _current(self) -> _File:
        """The file to append to: a new one once the last is past ROTATE_BYTES (or torn)."""
        last = self._files[-1] if self._files else None
        if last is not None and not last.torn and last.size <= ROTATE_BYTES:
            return last
        with self._disk("start a file of"):
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files.append(new := _File(self.folder))
            new.spilling = last is not None and last.spilling  # records keep their order
            return new
        if last is None or last.torn:
            raise OSError("No usage journal file to write to")
        return last  # past its size: grown rather than not written

    def _append(self, kind: str, fields: dict[str, Any]) -> _File | None:
        # Failing, the records are in memory only, as before the journal. (`_disk("write")`
        # spelled out: twice a request, a context manager's generator costs more than the rest.)
        try:
            file = self._current()
            file.append(_line(kind, fields))
        except OSError:
            self._failed("write")
            return None
        self._failing.discard("write")
        return file

    def started(self, entry_id: uuid.UUID, fields: dict[str, Any]) -> None:
        """A request is admitted: what its record would say, should the process die before it ends."""
        if file := self._append(STARTED, fields):
            file.open_starts += 1
            self._started[entry_id] = file

    @property
    def spilling(self) -> bool:
        """Records are being kept here only: the next ones must be too (they come after)."""
        return bool(self._files) and self._files[-1].spilling

    @property
    def spilled(self) -> int:
        return sum(file.spilled for file in self._files)

    @property
    def spilled_since(self) -> float | None:
        return min((file.spilled_since for file in self._files if file.spilled), default=None)

    def finished(self, entry_id: uuid.UUID, fields: dict[str, Any], spill: bool = False) -> bool:
        """A request's whole record, to be reported `written()` once the database has it. With
        `spill`, it is kept here only, for `read_spill()`: True then (False if the journal
        could not take it, and the caller must keep it)."""
        file = self._append(FINISHED, fields)
        if start := self._started.pop(entry_id, None):
            start.open_starts -= 1  # its record is on disk (or, if not, never will be)
        if file is None:
            return False
        file.unwritten += 1
        if not spill:
            self._held[entry_id] = file
            return False
        if not file.spilling:
            file.spilling, file.read_at = True, file.last_at
        if not file.spilled:
            file.spilled_since = time.time()
        file.spilled += 1
        return True

    def spill_to_read(self) -> tuple[_File, Path, int, int] | None:
        """The oldest spilled stretch: (its file, path, from, to) for `read_spill()`."""
        for file in self._files:
            if file.spilled:
                return file, file.path, file.read_at, file.size
        return None

    def spill_written(self, file: _File, read_to: int, count: int, since: float) -> None:
        """`count` spilled records, read up to `read_to`, are written; the rest ended after `since`."""
        if read_to >= file.size:
            # Caught up: the next records are kept in memory again. Spilled records not counted
            # were lines that could not be read (logged by `read_spill`).
            count, file.spilling = file.spilled, False
        file.read_at, file.spilled, file.unwritten = read_to, file.spilled - count, file.unwritten - count
        file.spilled_since = since
        self._tidy()

    def written(self, entry_ids) -> None:
        """These records are in the database (or, refused by it, in the error log)."""
        for entry_id in entry_ids:
            if file := self._held.pop(entry_id, None):
                file.unwritten -= 1
        self._tidy()

    def _tidy(self) -> None:
        *older, current = self._files or [None]
        for file in older:
            if file.settled:
                with self._disk("delete a file of"):
                    file.remove()
                    self._files.remove(file)
        if current is not None and current.settled and current.size:
            with self._disk("empty a file of"):
                os.ftruncate(current.fd, 0)  # O_APPEND: the next line goes at the start again
                current.size = current.read_at = 0
                current.spilling = current.torn = False

    def sync(self) -> None:
        """Put what was written on the disk itself (in a thread: it may take a while)."""
        for file in list(self._files):
            if file.dirty:
                file.dirty = False
                with contextlib.suppress(OSError):  # removed meanwhile
                    os.fdatasync(file.fd)

    def close(self) -> None:
        """Shutting down: settled files go; the others stay for the next worker to replay."""
        for file in self._files:
            with self._disk("close a file of"):
                if file.settled:
                    file.remove()
                else:
                    file.release()
        self._files, self._started, self._held = [], {}, {}


class Orphan(_Held):
    """A journal file of a dead worker, locked by this process until `remove()` or `release()`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.mtime = os.fstat(fd).st_mtime  # about when its worker died

    def lines(self) -> Iterator[dict[str, Any]]:
        """Its lines, from the start, one at a time."""
        with open(self.fd, "rb", closefd=False) as file:
            file.seek(0)
            for raw in file:
                if (line := _parsed(raw, self.path)) is not None:
                    yield line


_READ_BYTES = 4 << 20


def _parsed(raw: bytes, path: Path) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        line = None
    if not isinstance(line, dict):  # torn by a machine crash, a disk's bit flipped
        logger.warning("Skipping a torn line of %s", path)
        return None
    return line


def read_spill(path: Path, start: int, end: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` records spilled in `path` from `start` (where a line begins) to `end`, and
    where the next line begins. In a thread: file I/O."""
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(min(end - start, _READ_BYTES))
    records, at = [], start
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n") or len(records) >= limit:
            break  # the rest of the line is beyond what was read
        at += len(raw)
        if (line := _parsed(raw, path)) is not None and line.pop("k", None) == FINISHED:
            records.append(line)
    return records, at


_foreign_seen: set[str] = set()


@runtime.resettable
def reset() -> None:
    _foreign_seen.clear()


def claim_orphans(folder: Path) -> list[Orphan]:
    """This database's journal files no live process holds, locked for this one."""
    orphans, mine, foreign = [], fingerprint(), []
    for path in sorted(folder.glob(f"usage-*{SUFFIX}")):
        if _owner(path) not in (mine, None):
            foreign.append(path.name)
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its worker is alive
            os.close(fd)
            continue
        if os.fstat(fd).st_nlink == 0:  # another replay took it meanwhile
            os.close(fd)
            continue
        orphans.append(Orphan(path, fd))
    if unseen := [name for name in foreign if name not in _foreign_seen]:
        # Another database's instance shares the folder: its workers replay these.
        logger.warning(
            "Leaving usage journals of another database in %s (this one's fingerprint: %s): %s",
            folder,
            mine,
            ", ".join(unseen),
        )
        _foreign_seen.update(unseen)
    for stale in folder.glob("*.tmp"):  # a worker killed as it made a file: empty
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stale.stat().st_mtime > 60:
                stale.unlink()
    return orphans
