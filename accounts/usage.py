"""Usage records: the entry a finished request leaves, and the writer that puts entries into the
database in batches, off the response path.

`record()` appends the entry to this worker's journal (accounts.journal: one `write()`, so that
no kill loses it) and to a list; a background task per process writes what has gathered
every USAGE_FLUSH_INTERVAL seconds (or sooner, when a batch is full) in one transaction, one
thread hop per batch instead of one database round trip per request. A failed write is
retried with backoff and never discarded; retries cannot duplicate a row (records carry their
own primary key and conflicts are ignored). `flush()` writes everything now: on shutdown.
`replay_orphans()` writes what dead workers' journals hold: at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
    transaction,
)

from accounts import journal, limits, metrics, offloop, prices, runtime

logger = logging.getLogger("hfproxy.usage")

BATCH_SIZE = 500
_MAX_BACKOFF = 30.0


@dataclass
class UsageEntry:
    """One request's usage record, as its exchange reports it: UsageRecord's columns. The writer
    fills in the price and the cost as it writes it."""

    id: uuid.UUID
    created_at: datetime
    request_id: str
    user_id: int
    api_key_id: int
    endpoint: str
    status: int
    outcome: str
    usage_source: str
    latency_ms: int
    hf_token_id: int | None = None  # None: the server's HF_TOKEN
    team_id: int | None = None
    bill_to: str = ""
    upstream_attempts: int = 0
    provider: str = ""
    model_requested: str = ""
    model_answered: str = ""
    stream: bool = False
    error_code: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    units: Decimal | None = None  # images generated, seconds of audio
    ttft_ms: int | None = None
    price_input: Decimal | None = None
    price_output: Decimal | None = None
    cost_usd: Decimal | None = None

    def __post_init__(self) -> None:
        # A record must always be writable, whatever a client sent: text within its column.
        self.request_id = _text(self.request_id, 128)
        self.provider = _text(self.provider, 64)
        self.model_requested = _text(self.model_requested, 200)
        self.model_answered = _text(self.model_answered, 200)
        self.error_code = _text(self.error_code, 40)


def _text(value: str | None, limit: int) -> str:
    return (value or "").replace("\x00", "")[:limit]  # PostgreSQL refuses NUL in text


class _Worker:
    """The writer's part bound to one event loop: its background task and what it waits on."""

    def __init__(self, writer: UsageWriter) -> None:
        self.wakeup = asyncio.Event()
        self.lock = asyncio.Lock()
        # A fresh context: the task must not inherit the request's thread-sensitive context.
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(writer._run(self), context=contextvars.Context())
        self.syncer = loop.create_task(writer._sync(), context=contextvars.Context())

    async def aclose(self) -> None:
        for task in (self.task, self.syncer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class UsageWriter:
    def __init__(self) -> None:
        self._pending: list[UsageEntry] = []
        self._workers = runtime.PerLoop(lambda: _Worker(self), close=_Worker.aclose)
        self._failures = 0
        self.journal = journal.Journal()
        self._replay_due = False

    @property
    def pending(self) -> int:
        """Records waiting to be written: in memory, and spilled to the journal."""
        return len(self._pending) + self.journal.spilled

    def oldest_unwritten(self) -> float:
        """Seconds since the oldest record waiting to be written was made (0: none waits)."""
        if self._pending:
            oldest = _ended(self._pending[0]).timestamp()
        elif (oldest := self.journal.spilled_since) is None:
            return 0.0
        return max(0.0, time.time() - oldest)

    def observe_lag(self) -> None:
        metrics.oldest_unwritten.set(self.oldest_unwritten())

    def started(self, entry_id: uuid.UUID, **fields) -> None:
        """A request is admitted: journal what its record would say if this process died before
        it ended (`fields`: UsageEntry's that are known by then). Call it from the event loop."""
        self._worker()
        self.journal.started(entry_id, {"id": entry_id, **fields})

    def record(self, entry: UsageEntry) -> None:
        """Queue one usage record (on disk when this returns). Call it from the event loop."""
        # Past the bound (the database away) records are kept in the journal only, and read
        # back from there once those in memory are written.
        spill = self.journal.spilling or len(self._pending) >= settings.USAGE_QUEUE_MAX
        if not self.journal.finished(entry.id, vars(entry), spill=spill):
            self._pending.append(entry)
        metrics.queue_depth.inc()
        worker = self._worker()
        if len(self._pending) >= BATCH_SIZE or spill:
            worker.wakeup.set()

    def _worker(self) -> _Worker:
        """The running loop's worker, started if it is not running."""
        worker = self._workers.get()
        if worker.task.done():  # stopped: the end of a test, a shutdown
            self._workers.drop()
            worker = self._workers.get()
        return worker

    async def _run(self, worker: _Worker) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wakeup.wait(), settings.USAGE_FLUSH_INTERVAL)
            worker.wakeup.clear()
            await self._write_pending(worker)
            self.observe_lag()
            if self._failures:
                await self._back_off()

    async def _back_off(self) -> None:
        """Wait before trying again, saying meanwhile how far behind the writer falls."""
        loop = asyncio.get_running_loop()
        until = loop.time() + min(_MAX_BACKOFF, 0.5 * 2**self._failures)
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(1.0, left))
            self.observe_lag()

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(settings.USAGE_JOURNAL_FSYNC)
            await asyncio.to_thread(self.journal.sync)

    def replay_orphans(self) -> None:
        """Write the records in dead workers' journals (with the next batch, retried as batches are)."""
        self._replay_due = True
        self._worker().wakeup.set()

    async def _write_pending(self, worker: _Worker) -> None:
        async with worker.lock:
            if self._replay_due:
                lost: list[tuple[int, str]] = []
                try:
                    replayed = await sync_to_async(replay_orphans)(self.journal.folder, lost)
                    await limits.free_slots(lost)
                except Exception:
                    logger.exception(
                        "Replaying dead workers' usage journals failed; retried with the next batch"
                    )
                else:
                    self._replay_due = False
                    if replayed:
                        logger.warning("Replayed %d usage records from dead workers' journals", replayed)
            while self._pending:
                if not await self._write_batch(self._pending[:BATCH_SIZE]):
                    return
            while spilled := self.journal.spill_to_read():
                file, path, start, end = spilled
                lines, read_to = await sync_to_async(journal.read_spill)(path, start, end, BATCH_SIZE)
                batch = [entry for line in lines if (entry := _decoded(line)) is not None]
                if not await self._write_batch(batch):
                    return
                since = _ended(batch[-1]).timestamp() if batch else time.time()
                self.journal.spill_written(file, read_to, len(lines), since)

    async def _write_batch(self, batch: list[UsageEntry]) -> bool:
        """Write a batch (from the queue or the journal); False when it stays to be written."""
        try:
            await sync_to_async(_write)(batch)
        except Exception:
            self._failures += 1
            logger.exception(
                "Writing %d usage records failed (attempt %d); they stay queued (%d in all)",
                len(batch),
                self._failures,
                self.pending,
            )
            return self._failures >= 2 and await self._isolate(batch)
        if self._pending and batch and self._pending[0] is batch[0]:
            del self._pending[: len(batch)]
        await self._written(batch)
        self._failures = 0
        return True

    async def _isolate(self, batch: list[UsageEntry]) -> bool:
        """A batch failed again: write its records one by one, so that one record the database
        refuses (while it answers) cannot hold back every record queued after it."""
        try:
            done, unwritable = await sync_to_async(_write_each)(batch)
        except Exception:
            return False  # the database itself is down: everything stays queued
        gone = {id(entry) for entry in done + unwritable}
        self._pending = [entry for entry in self._pending if id(entry) not in gone]
        await self._written(done, unwritable)
        self._failures = 0
        return True

    async def _written(self, batch: list[UsageEntry], unwritable: list[UsageEntry] = ()) -> None:
        """Records are out of the queue: written (`batch`) or refused by the database."""
        metrics.queue_depth.dec(len(batch) + len(unwritable))
        self.journal.written(entry.id for entries in (batch, unwritable) for entry in entries)
        if batch:
            # From the request's end (its record's creation plus its latency) to now.
            ended = min(_ended(e) for e in batch)
            metrics.write_lag.observe(max(0.0, (datetime.now(UTC) - ended).total_seconds()))

    async def flush(self, deadline: float | None = None) -> bool:
        """Write every queued record now, retrying until the database takes them or `deadline`
        seconds have passed. True when nothing is left."""
        if not self.pending:
            return True
        worker = self._worker()
        try:
            async with asyncio.timeout(deadline):
                while self.pending:
                    await self._write_pending(worker)
                    if self.pending:
                        await asyncio.sleep(min(_MAX_BACKOFF, 0.5 * 2**self._failures))
        except TimeoutError:
            logger.error(
                "%d usage records could not be written before the deadline (kept in the journal)",
                self.pending,
            )
        return not self.pending

    async def stop(self, deadline: float | None = None) -> bool:
        """Flush, then end the background task (shutdown; the end of a test)."""
        flushed = await self.flush(deadline)
        await self._workers.aclose()
        self.journal.close()
        # The writer's thread holds its own database connection; let it go.
        await sync_to_async(connections.close_all)()
        return flushed


def _ended(entry: UsageEntry) -> datetime:
    return entry.created_at + timedelta(milliseconds=entry.latency_ms or 0)


def _write(batch: list[UsageEntry]) -> None:
    from accounts.models import UsageRecord

    # This thread's connection may be stale (the database restarted): drop it if so.
    close_old_connections()
    try:
        table = prices.table()
        for entry in batch:
            prices.price_entry(entry, table)
        last_used: dict[int, datetime] = {}
        for entry in batch:
            if entry.api_key_id not in last_used or entry.created_at > last_used[entry.api_key_id]:
                last_used[entry.api_key_id] = entry.created_at
        with transaction.atomic():
            if connection.vendor == "postgresql":
                _insert(batch)
            else:
                UsageRecord.objects.bulk_create(
                    [UsageRecord(**vars(e)) for e in batch], ignore_conflicts=True
                )
            _touch(last_used)
    except Exception:
        connection.close()  # reconnect on the next attempt
        offloop.drop_dead_connections()
        raise


_COLUMNS = tuple(field.name for field in dataclasses.fields(UsageEntry))


def _insert(batch: list[UsageEntry]) -> None:
    """The batch in one INSERT (PostgreSQL): a column's values as one array each, unnested, so
    the statement is the same short text whatever the batch's size (psycopg parses it once,
    and no model instance or query is built per record as bulk_create does). A record already
    written (a retried batch) is skipped, and so not rolled up twice."""
    from accounts.models import UsageRecord

    global _INSERT
    if _INSERT is None:
        fields = [UsageRecord._meta.get_field(name) for name in _COLUMNS]
        arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
        _INSERT = (
            f"INSERT INTO accounts_usagerecord ({', '.join(f.column for f in fields)})"
            f" SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        )
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [[getattr(entry, name) for entry in batch] for name in _COLUMNS])


_INSERT: str | None = None


def _touch(last_used: dict[int, datetime]) -> None:
    """Move the keys' `last_used_at` on to their last record's time, never back: one statement
    for the batch, whatever its number of keys. On PostgreSQL the keys are locked in ascending
    order first, so that two workers' batches sharing keys cannot deadlock each other."""
    if not last_used:
        return
    ops = connection.ops
    params = [
        value
        for key_id, when in sorted(last_used.items())
        for value in (key_id, ops.adapt_datetimefield_value(when))
    ]
    if connection.vendor == "postgresql":
        wanted = ", ".join(["(%s::bigint, %s::timestamptz)"] * len(last_used))
        sql = (
            f"WITH wanted (id, used) AS (VALUES {wanted}), "
            "locked AS (SELECT k.id FROM accounts_apikey k JOIN wanted w ON w.id = k.id"
            " WHERE k.last_used_at IS NULL OR k.last_used_at < w.used ORDER BY k.id FOR UPDATE OF k) "
            "UPDATE accounts_apikey k SET last_used_at = w.used FROM wanted w"
            " WHERE k.id = w.id AND k.id IN (SELECT id FROM locked)"
            " AND (k.last_used_at IS NULL OR k.last_used_at < w.used)"
        )
    else:  # SQLite: one writer at a time, no order to keep
        wanted = ", ".join(["(%s, %s)"] * len(last_used))
        sql = (
            "UPDATE accounts_apikey SET last_used_at = w.used"
            f" FROM (SELECT column1 AS id, column2 AS used FROM (VALUES {wanted})) AS w"
            " WHERE accounts_apikey.id = w.id"
            " AND (accounts_apikey.last_used_at IS NULL OR accounts_apikey.last_used_at < w.used)"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _write_each(batch: list[UsageEntry]) -> tuple[list, list]:
    """Write records one at a time: (written, refused while the database answers). Nothing is
    dropped silently: each refused record goes whole to the error log, so that one of them
    cannot hold back every record after it (in the queue, in a dead worker's journal)."""
    written, unwritable = [], []
    for entry in batch:
        try:
            _write([entry])
            written.append(entry)
        except (OperationalError, InterfaceError):
            raise  # the database is away or busy (SQLite: "database is locked"), not refusing
        except Exception:
            with connection.cursor() as cursor:  # raises if the database is down
                cursor.execute("SELECT 1")
            unwritable.append(entry)
    for entry in unwritable:  # once the batch is through: a retried one would log them again
        logger.error("Usage record the database refuses, logged instead: %r", entry)
    return written, unwritable


# Dead workers' journals -------------------------------------------------------------------------

WORKER_LOST = "worker_lost"  # the error code of a request its worker died serving


def replay_orphans(folder, lost: list | None = None) -> int:
    """Claim the journals no live worker holds, write their records (a `worker_lost` one for
    each request started and never finished, noted in `lost` as (key id, record id) for its
    slot to be given back), delete them. The number of records.

    Read twice, a batch at a time, so that a journal that grew through a long outage is never
    held in memory whole: first which requests finished, then the records."""
    orphans = journal.claim_orphans(folder)
    written = 0
    try:
        finished = {
            line.get("id")
            for orphan in orphans
            for line in orphan.lines()
            if line.get("k") == journal.FINISHED
        }
        batch: list[UsageEntry] = []
        for orphan in orphans:
            for line in orphan.lines():
                if (entry := _replayed(line, finished, orphan.mtime)) is not None:
                    batch.append(entry)
                    if lost is not None and entry.error_code == WORKER_LOST:
                        lost.append((entry.api_key_id, entry.id.hex))
                if len(batch) >= BATCH_SIZE:
                    written, batch = written + _write_replayed(batch), []
        written += _write_replayed(batch)
    except BaseException:
        for orphan in orphans:
            orphan.release()  # kept for the next try, by this worker or another
        raise
    for orphan in orphans:
        orphan.remove()
    return written


def _write_replayed(batch: list[UsageEntry]) -> int:
    """Write a replayed batch; the number written (records the database refuses are logged)."""
    try:
        _write(batch)
        return len(batch)
    except Exception:
        return len(_write_each(batch)[0])  # raises if the database itself is down


def _replayed(line: dict, finished: set[str], died: float) -> UsageEntry | None:
    """A journal line's record: its own (a finished request), a `worker_lost` one (a request
    started and never finished), or none (the start of one that finished)."""
    kind = line.pop("k", None)
    if kind == journal.FINISHED:
        return _decoded(line)
    if kind == journal.STARTED and line.get("id") not in finished:
        return _cut_off(line, died)
    return None


_DECIMALS = ("units", "price_input", "price_output", "cost_usd")


def _decoded(line: dict) -> UsageEntry | None:
    """The record a journal line holds; None (the line logged) when it makes none."""
    try:
        fields = {
            **line,
            "id": uuid.UUID(line["id"]),
            "created_at": datetime.fromisoformat(line["created_at"]),
        }
        for name in _DECIMALS:
            if fields.get(name) is not None:
                fields[name] = Decimal(fields[name])
        return UsageEntry(**fields)
    except (ArithmeticError, AttributeError, KeyError, TypeError, ValueError):  # Decimal("x"): arithmetic
        logger.error("Usage journal line that makes no record, logged instead: %r", line)
        return None


def _cut_off(start: dict, died: float) -> UsageEntry | None:
    """The record of a request whose worker died serving it, from its "started" line."""
    from accounts.models import Outcome, UsageSource

    entry = _decoded(
        {
            **start,
            "status": 503,
            "outcome": Outcome.PROXY_ERROR,
            "error_code": WORKER_LOST,
            "usage_source": UsageSource.MISSING,
            "latency_ms": 0,
        }
    )
    if entry is not None:
        entry.latency_ms = max(0, round((died - entry.created_at.timestamp()) * 1000))
    return entry


writer = UsageWriter()
runtime.on_stop(writer)
