"""The usage journal (issue 16, point 6): on disk before the response ends, emptied once
written, and a dead worker's replayed once, its unfinished requests recorded as lost."""

import errno
import json
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from accounts import journal, usage
from accounts.models import ApiKey, UsageRecord
from tests.accounts.test_usage import MESSAGES, entry, post
from tests.support.answers import completion


def _lines(folder) -> list[dict]:
    return [json.loads(line) for path in folder.glob("*.jsonl") for line in path.read_text().splitlines()]


async def test_a_record_is_on_disk_until_the_database_has_it(async_client, hf, settings, tmp_path):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    settings.USAGE_FLUSH_INTERVAL = 60  # the writer waits: what is journaled stays there
    hf.post("/chat/completions").respond(200, json=completion(usage=(3, 4)))
    await post(async_client, {"model": "org/m", "messages": MESSAGES}, x_request_id="kept")
    started, finished = _lines(tmp_path)
    assert (started["k"], finished["k"]) == ("s", "f")
    assert started["id"] == finished["id"] and finished["request_id"] == "kept"
    assert (finished["outcome"], finished["total_tokens"]) == ("ok", 7)
    assert await usage.writer.flush(10)
    assert _lines(tmp_path) == []  # the file is emptied, not grown forever


@pytest.mark.parametrize("model", ["org/m \u00e9\u4e2d\n\u2028", "org/\ud83d lone surrogate"])
def test_a_record_comes_back_from_its_line_as_it_went_in(model):
    key = SimpleNamespace(user_id=1, pk=2)
    made = entry(key, model_requested=model, units=Decimal("1.5"), cost_usd=Decimal("0.000012"), ttft_ms=7)
    line = journal._line(journal.FINISHED, vars(made))
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever a client sent
    parsed = json.loads(line)
    assert parsed.pop("k") == journal.FINISHED
    assert usage._decoded(parsed) == made


def _orphan(folder, *lines: dict, owner: str | None = None) -> Path:
    """A dead worker's journal, ending in a torn line; `owner`: its database's fingerprint."""
    folder.mkdir(exist_ok=True)
    path = folder / f"usage-{owner or journal.fingerprint()}-1-dead{journal.SUFFIX}"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"k": "f", "torn')
    return path


def _line(kind: str, key: ApiKey, **fields) -> dict:
    base = {
        "k": kind,
        "id": str(uuid.uuid4()),
        "created_at": str(datetime.now(UTC)),
        "request_id": kind + "-request",
        "user_id": key.user_id,
        "api_key_id": key.pk,
        "hf_token_id": None,
        "endpoint": "chat_completions",
    }
    return {**base, **fields}


async def test_a_dead_workers_journal_is_replayed_once(api_key, tmp_path):
    key = await ApiKey.objects.aget()
    done = _line("f", key, status=200, outcome="ok", usage_source="provider", latency_ms=5, total_tokens=9)
    lost = _line("s", key)
    _orphan(tmp_path, _line("s", key, id=done["id"]), done, lost)
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 2
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 0
    assert list(tmp_path.iterdir()) == []
    records = {str(r.id): r async for r in UsageRecord.objects.all()}
    assert (records[done["id"]].outcome, records[done["id"]].total_tokens) == ("ok", 9)
    cut = records[lost["id"]]
    assert (cut.status, cut.outcome, cut.error_code, cut.usage_source) == (
        503,
        "proxy_error",
        "worker_lost",
        "missing",
    )


async def test_a_replay_takes_only_its_own_databases_journals(api_key, tmp_path, caplog, monkeypatch):
    # Two instances from one checkout (two DATABASE_URLs) share the default folder.
    key = await ApiKey.objects.aget()
    fields = {"status": 200, "outcome": "ok", "usage_source": "provider", "latency_ms": 5}
    other = journal.fingerprint({"ENGINE": "django.db.backends.postgresql", "NAME": "other"})
    assert other != journal.fingerprint()
    _orphan(tmp_path, ours := _line("f", key, **fields))
    theirs = _orphan(tmp_path, _line("f", key, **fields), owner=other)

    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 1
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 0
    assert [str(i) async for i in UsageRecord.objects.values_list("id", flat=True)] == [ours["id"]]
    assert list(tmp_path.iterdir()) == [theirs]  # left for its own database's workers
    foreign = [r for r in caplog.records if theirs.name in r.getMessage()]
    assert len(foreign) == 1 and foreign[0].levelname == "WARNING"  # said once

    monkeypatch.setattr(journal, "fingerprint", lambda: other)  # the other instance's worker
    [claimed] = journal.claim_orphans(tmp_path)
    assert claimed.path == theirs
    claimed.remove()


def test_the_fingerprint_is_the_databases_identity_not_its_password():
    base = {"ENGINE": "django.db.backends.postgresql", "NAME": "hfproxy", "HOST": "db", "PORT": "5432"}
    same = journal.fingerprint({**base, "PASSWORD": "secret", "PORT": 5432})
    assert journal.fingerprint(base) == same and len(same) == 12
    for change in ({"NAME": "other"}, {"HOST": "db2"}, {"PORT": "5433"}, {"ENGINE": "x"}):
        assert journal.fingerprint({**base, **change}) != same


def test_a_workers_files_carry_its_databases_fingerprint(settings, tmp_path):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    live = journal.Journal()
    live.started(uuid.uuid4(), {"id": "x"})
    try:
        [path] = tmp_path.iterdir()
        assert path.name.startswith(f"usage-{journal.fingerprint()}-{os.getpid()}-")
    finally:
        live.close()


async def test_a_journal_named_before_fingerprints_is_replayed(api_key, tmp_path):
    # Files of the old name, usage-<pid>-<id>.jsonl, say no database: replayed by whoever starts.
    key = await ApiKey.objects.aget()
    line = _line("f", key, status=200, outcome="ok", usage_source="provider", latency_ms=5)
    _orphan(tmp_path, line).rename(tmp_path / f"usage-1-dead{journal.SUFFIX}")
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_live_workers_journal_is_not_claimed(settings, tmp_path):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    live = journal.Journal()
    live.started(uuid.uuid4(), {"id": "x"})
    try:
        assert journal.claim_orphans(tmp_path) == []
        assert len(os.listdir(tmp_path)) == 1
    finally:
        live.close()


async def test_past_the_bound_records_wait_in_the_journal_not_in_memory(
    api_key, settings, tmp_path, monkeypatch
):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    settings.USAGE_QUEUE_MAX = 5
    settings.USAGE_FLUSH_INTERVAL = 60
    key = await ApiKey.objects.aget()

    def down(batch):
        raise OperationalError("the database is away")

    monkeypatch.setattr(usage, "_write", down)
    monkeypatch.setattr(usage, "_write_each", down)
    made = [entry(key, request_id=f"r{i}") for i in range(20)]
    for one in made:
        usage.writer.record(one)
    assert not await usage.writer.flush(0.5)
    assert len(usage.writer._pending) == 5  # memory stays bounded
    assert usage.writer.pending == 20 and usage.writer.oldest_unwritten() > 0
    assert len([line for line in _lines(tmp_path) if line["k"] == "f"]) == 20

    monkeypatch.undo()
    assert await usage.writer.flush(10)
    assert usage.writer.pending == 0 and usage.writer.oldest_unwritten() == 0
    written = [r async for r in UsageRecord.objects.values_list("request_id", flat=True)]
    assert sorted(written) == sorted(e.request_id for e in made)
    assert _lines(tmp_path) == []
    usage.writer.record(entry(key, request_id="after"))  # the bound is memory's again
    assert len(usage.writer._pending) == 1


async def test_a_replayed_record_the_database_refuses_is_logged_not_retried_forever(
    api_key, tmp_path, caplog
):
    key = await ApiKey.objects.aget()
    fields = {"status": 200, "outcome": "ok", "usage_source": "provider", "latency_ms": 5}
    kept = _line("f", key, **fields)
    deleted = _line("f", key, **fields, api_key_id=key.pk + 1000)  # its key is gone
    _orphan(tmp_path, kept, deleted)
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []  # not claimed again with every batch
    assert [str(i) async for i in UsageRecord.objects.values_list("id", flat=True)] == [kept["id"]]
    assert any("refuses" in r.getMessage() and deleted["id"] in r.getMessage() for r in caplog.records)


async def test_a_busy_database_keeps_the_journal_for_the_next_try(api_key, tmp_path, monkeypatch):
    key = await ApiKey.objects.aget()
    line = _line("f", key, status=200, outcome="ok", usage_source="provider", latency_ms=5)
    _orphan(tmp_path, line)

    def locked(batch):
        raise OperationalError("database is locked")

    monkeypatch.setattr(usage, "_write", locked)
    with pytest.raises(OperationalError):  # a busy database is not a refusal
        await sync_to_async(usage.replay_orphans)(tmp_path)
    monkeypatch.undo()
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 1
    assert [str(i) async for i in UsageRecord.objects.values_list("id", flat=True)] == [line["id"]]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_when_a_file_is_emptied_does_not_stop_the_writer(
    api_key, settings, tmp_path, monkeypatch, caplog
):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    key = await ApiKey.objects.aget()
    monkeypatch.setattr(journal.os, "ftruncate", _full_disk)
    for n in range(3):
        usage.writer.record(entry(key, request_id=f"r{n}"))
        assert await usage.writer.flush(10)
    assert await UsageRecord.objects.acount() == 3
    assert len([line for line in _lines(tmp_path) if line["k"] == "f"]) == 3  # kept, not emptied
    assert len([r for r in caplog.records if "Cannot" in r.getMessage()]) == 1  # said once
    assert await usage.writer.stop(10)
    assert list(tmp_path.iterdir()) == []  # closed all the same: its settled file is gone


async def test_a_full_disk_when_a_file_hands_over_keeps_the_current_one(
    api_key, settings, tmp_path, monkeypatch, caplog
):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    settings.USAGE_FLUSH_INTERVAL = 60
    key = await ApiKey.objects.aget()
    usage.writer.started(in_flight := uuid.uuid4(), request_id="in flight")  # the file stays unsettled
    real_open = os.open

    def no_new_file(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            _full_disk()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(journal, "ROTATE_BYTES", 1)
    monkeypatch.setattr(journal.os, "open", no_new_file)
    for n in range(5):
        usage.writer.record(entry(key, request_id=f"r{n}"))
        assert await usage.writer.flush(10)
        assert len(list(tmp_path.iterdir())) == 1  # still the one file, past its size
    usage.writer.record(entry(key, id=in_flight, request_id="in flight"))
    assert await usage.writer.flush(10)
    assert await UsageRecord.objects.acount() == 6
    assert len([r for r in caplog.records if "Cannot" in r.getMessage()]) == 1


def test_a_short_write_leaves_no_fragment_for_the_next_line_to_glue_onto(settings, tmp_path, monkeypatch):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    live = journal.Journal()
    real_write = os.write

    def half(fd, data):
        return real_write(fd, data[: len(data) // 2])

    try:
        live.started(first := uuid.uuid4(), {"id": str(first)})
        monkeypatch.setattr(journal.os, "write", half)
        live.started(uuid.uuid4(), {"id": "cut"})  # the disk filled up mid-line
        monkeypatch.undo()
        live.started(last := uuid.uuid4(), {"id": str(last)})
        assert [line["id"] for line in _lines(tmp_path)] == [str(first), str(last)]
    finally:
        live.close()


async def test_a_spilled_line_that_cannot_be_read_is_skipped(
    api_key, settings, tmp_path, monkeypatch, caplog
):
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    settings.USAGE_QUEUE_MAX = 0  # every record spills
    settings.USAGE_FLUSH_INTERVAL = 60
    key = await ApiKey.objects.aget()
    monkeypatch.setattr(usage, "_write", _full_disk)  # the database is away meanwhile
    made = [entry(key, request_id=f"r{n}") for n in range(3)]
    for one in made:
        usage.writer.record(one)
    [path] = tmp_path.iterdir()
    text = path.read_text()
    at = text.index(str(made[1].id))
    path.write_text(text[:at] + "\x00" * 8 + text[at + 8 :])  # a bit flip: not JSON any more
    monkeypatch.undo()
    assert await usage.writer.flush(10)
    written = [r async for r in UsageRecord.objects.values_list("request_id", flat=True)]
    assert sorted(written) == ["r0", "r2"]
    assert usage.writer.pending == 0
    assert any("Skipping" in r.getMessage() for r in caplog.records)


async def test_a_journal_line_that_makes_no_record_is_logged_not_retried_forever(api_key, tmp_path, caplog):
    key = await ApiKey.objects.aget()
    fields = {"status": 200, "outcome": "ok", "usage_source": "provider", "latency_ms": 5}
    kept = _line("f", key, **fields)
    garbled = _line("f", key, **fields, cost_usd="0.0x1")  # valid JSON, not a record
    unnamed = {"k": "s", "created_at": str(datetime.now(UTC))}  # a start without its id
    _orphan(tmp_path, kept, garbled, unnamed)
    assert await sync_to_async(usage.replay_orphans)(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []
    assert [str(i) async for i in UsageRecord.objects.values_list("id", flat=True)] == [kept["id"]]
    logged = [r.getMessage() for r in caplog.records if "makes no record" in r.getMessage()]
    assert len(logged) == 2 and garbled["id"] in logged[0]


async def test_the_slots_of_a_dead_workers_requests_come_back_at_replay(api_key, settings, tmp_path):
    import asyncio

    from accounts import limits

    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    key = await ApiKey.objects.aget()
    cut = _line("s", key)
    rules = limits.KeyLimits(max_parallel=1)
    # The request the dead worker was serving holds the key's one slot, under its record's id.
    assert (await limits.admit(key.pk, key.user_id, rules, holder=uuid.UUID(cut["id"]).hex)).holds_slot
    with pytest.raises(limits.Refusal):
        await limits.admit(key.pk, key.user_id, rules)
    _orphan(tmp_path, cut)
    usage.writer.replay_orphans()
    for _ in range(400):  # now, not at the slot's deadline (REQUEST_TIMEOUT + 120 s)
        try:
            assert (await limits.admit(key.pk, key.user_id, rules)).holds_slot
            break
        except limits.Refusal:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the slot was not given back")
    assert await UsageRecord.objects.filter(error_code="worker_lost").acount() == 1
