"""Usage records as CSV: the columns, and a response streamed page by page."""

from __future__ import annotations

import csv
import re
from datetime import datetime

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from accounts.models import UsageRecord

# The CSV's column: the record's field (through its key, user and token for their names).
CSV_COLUMNS = {
    "created_at": "created_at",
    "request_id": "request_id",
    "user": "user__username",
    "api_key": "api_key__prefix",
    "team": "team__name",
    "bill_to": "bill_to",
    "endpoint": "endpoint",
    "model_requested": "model_requested",
    "model_answered": "model_answered",
    "stream": "stream",
    "status": "status",
    "outcome": "outcome",
    "error_code": "error_code",
    "hf_token": "hf_token__name",
    "upstream_attempts": "upstream_attempts",
    "provider": "provider",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "total_tokens": "total_tokens",
    "cached_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "units": "units",
    "cost_usd": "cost_usd",
    "price_input": "price_input",
    "price_output": "price_output",
    "usage_source": "usage_source",
    "latency_ms": "latency_ms",
    "ttft_ms": "ttft_ms",
}
CSV_PAGE = 2_000


class _Line:
    """csv.writer's file: hands back each written line."""

    def write(self, line: str) -> str:
        return line


# What starts a formula in a spreadsheet (OWASP's list), at the start of the cell or of any piece
# a spreadsheet may split it into: at a separator it may split on (a locale's `;`, a tab, `|`,
# a line break), spaces and quotes after it ignored, as an import that trims them would.
_FORMULA = re.compile(r"(^|[,;\t|\r\n])([\s\"]*)(?=[=+\-@\t\r])")


def _cell(value) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    # Model names come from clients: no piece of one may become a formula (`x;=1+1`).
    if isinstance(value, str):
        return _FORMULA.sub(r"\1\2'", value)
    return value


def _csv_page(records: QuerySet[UsageRecord], after: tuple | None) -> list[tuple]:
    # Keyset pagination: each page is one indexed query, however deep into the export.
    page = records.order_by("-created_at", "-id")
    if after is not None:
        page = page.filter(Q(created_at__lt=after[0]) | Q(created_at=after[0], id__lt=after[1]))
    return list(page.values_list("created_at", "id", *CSV_COLUMNS.values())[:CSV_PAGE])


async def _csv_lines(records: QuerySet[UsageRecord]):
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    after = None
    while True:
        rows = await sync_to_async(_csv_page)(records, after)
        for row in rows:
            yield writer.writerow([_cell(value) for value in row[2:]])
        if len(rows) < CSV_PAGE:
            return
        after = rows[-1][:2]


def usage_csv_response(records: QuerySet[UsageRecord]) -> StreamingHttpResponse:
    """The records as CSV, newest first, streamed page by page (an async iterator: under ASGI a
    sync one would be read whole into memory first)."""
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return StreamingHttpResponse(
        _csv_lines(records.order_by()),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="usage-{stamp}.csv"'},
    )
