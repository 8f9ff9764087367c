"""A paginator for lists of millions of rows: on PostgreSQL it counts them exactly only when the
planner expects few and only while that is quick, else takes the planner's estimate (an exact count(*) of ten million usage
records reads them all: seconds). Pages stay correct, being read by offset: only the number of
rows, and of pages, is then approximate, and the list says "about". SQLite counts exactly."""

from __future__ import annotations

import json

from django.core.paginator import Paginator
from django.db import OperationalError, connections, transaction
from django.utils.functional import cached_property

# Lists the planner expects this long are not counted at all; shorter ones are, for at most
# this long, before the estimate stands in (a page answers within ~300 ms).
ESTIMATE_ABOVE = 200_000
EXACT_COUNT_MS = 100
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled at its timeout


class EstimatedCountPaginator(Paginator):
    estimated = False  # whether `count` is the planner's estimate

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return super().count
        estimate = self._estimate(queryset, connection)
        if estimate >= ESTIMATE_ABOVE:
            self.estimated = True
            return estimate
        try:
            with transaction.atomic(using=queryset.db), connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('statement_timeout')")
                previous = cursor.fetchone()[0]
                # Local to this transaction or savepoint: rolled back with it when the count is
                # cancelled, and put back below when it is not (a savepoint's is kept after it).
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{EXACT_COUNT_MS}ms"])
                counted = queryset.count()
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
                return counted
        except OperationalError as error:
            if getattr(error.__cause__, "sqlstate", None) != QUERY_CANCELED:
                raise
        self.estimated = True
        return estimate

    @staticmethod
    def _estimate(queryset, connection) -> int:
        """The rows the planner expects `queryset` to return."""
        sql, params = queryset.order_by().query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return int(plan[0]["Plan"]["Plan Rows"])
