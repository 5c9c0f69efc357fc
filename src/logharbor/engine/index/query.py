"""Running queries over an index store: logs, SQL analysis, histograms, context.

A query is a search expression, optionally followed by ``|`` and SQL (SLS style)::

    status: 500 and path: /api* | select path, count(*) as c group by path order by c desc

The SQL runs over the logs the search kept, as the table ``log`` (``FROM log`` may
be left out).  Its columns: ``__time__`` (log time, seconds), ``__time_ns__``,
``__topic__``, ``__source__``, ``"__tag__:NAME"`` and every field, typed by the
index configuration (``long`` → BIGINT, ``double`` → DOUBLE, others VARCHAR; a
value that does not convert is NULL).  SLS/Presto SQL is translated to DuckDB by
sqlglot; a function DuckDB lacks is an error naming it.

Guards: every query has a timeout, a largest time range and the index store's
memory limit; only so many run at once.  Each answers with its own error code.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from ...protocol.errors import ErrorCode, ServiceError
from ..types import NANOS_PER_SECOND
from .config import IndexConfig
from .sealed import LOGS, Source
from .search import Compiler, field_expression, parse_search, required_tokens, sql_string
from .store import IndexStore, index_deleted
from .tokens import candidate_blocks

_BASE_COLUMNS = {
    "__time__": "t // 1000000000",
    "__time_ns__": "t",
    "__topic__": "topic",
    "__source__": "source",
}
_SQL_TYPES = {"long": "BIGINT", "double": "DOUBLE"}
_BUCKETS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)
_MISSING_FUNCTION = re.compile(
    r"(?:Scalar|Aggregate|Table) Function with name (\w+) does not exist"
)


@dataclass(frozen=True, slots=True)
class QueryLimits:
    timeout: float = 30.0  # seconds per query
    max_range_days: int = 3650
    max_concurrency: int = 4
    max_wait: float = 5.0  # seconds to wait for a free query slot
    max_lines: int = 1000  # logs per page of a search
    default_rows: int = 100  # rows of an SQL answer whose query has no LIMIT (as SLS)
    max_rows: int = 1_000_000  # rows of an SQL answer at most (SLS's largest LIMIT)
    max_answer_bytes: int = 256 << 20  # an answer's memory in the server, about


@dataclass(frozen=True, slots=True)
class LogRow:
    time_ns: int
    shard: int
    position: int
    index: int
    topic: str
    source: str
    tags: tuple[tuple[str, str], ...]
    contents: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class QueryResult:
    has_sql: bool
    logs: list[LogRow] = field(default_factory=list)  # a search without SQL
    keys: list[str] = field(default_factory=list)  # SQL result columns
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # SQL result rows
    matched: int | None = None  # logs the search matched (searches only)
    complete: bool = True  # False: the index had not caught up with every write
    elapsed_ms: int = 0
    where_query: str = ""
    agg_query: str = ""


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int  # seconds
    end: int
    count: int


def split_query(text: str) -> tuple[str, str | None]:
    """``search | sql`` → (search, sql); a ``|`` inside double quotes does not split."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "|" and not quoted:
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), None


class Cancellation:
    """Stops a query its caller no longer waits for (its client went away), so that
    it gives back its slot and its memory at once instead of at the timeout.

    DuckDB's interrupt stops the statement running, and does nothing when none is
    (between two statements, or before the first): once cancelled, the bound
    ``stop`` is called again every ``_REPEAT`` seconds until it is unbound, so the
    next statement is stopped too."""

    _REPEAT = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self._stopping = False  # a repeat is scheduled
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
        self._repeat()

    def bind(self, stop: Callable[[], None] | None) -> None:
        """Call ``stop`` on cancel (from now on if cancelled already); None unbinds."""
        with self._lock:
            self._stop = stop
        if stop is not None and self.cancelled:
            self._repeat()

    def _repeat(self) -> None:
        with self._lock:
            stop = self._stop
            if stop is None or self._stopping:
                return
            self._stopping = True
        with contextlib.suppress(duckdb.Error):  # the cursor was closed meanwhile
            stop()

        def again() -> None:
            with self._lock:
                self._stopping = False
            self._repeat()

        timer = threading.Timer(self._REPEAT, again)
        timer.daemon = True
        timer.start()


class QueryRunner:
    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_concurrency)

    @contextmanager
    def _slot(self, cancel: Cancellation | None = None) -> Iterator[None]:
        deadline = time.monotonic() + self.limits.max_wait
        while not self._slots.acquire(timeout=min(0.1, max(0.0, deadline - time.monotonic()))):
            if cancel is not None and cancel.cancelled:  # nobody waits for it any more
                raise ServiceError(ErrorCode.QUERY_TIMEOUT, "the query was cancelled")
            if time.monotonic() >= deadline:
                raise ServiceError(
                    ErrorCode.QUERY_QUOTA_EXCEED,
                    f"{self.limits.max_concurrency} queries are already running; retry shortly",
                )
        try:
            yield
        finally:
            self._slots.release()

    def _check_range(self, from_ns: int, to_ns: int) -> None:
        if from_ns >= to_ns:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "from must be before to")
        if to_ns - from_ns > self.limits.max_range_days * 86_400 * NANOS_PER_SECOND:
            raise ServiceError(
                ErrorCode.QUERY_TOO_LARGE,
                f"time range longer than {self.limits.max_range_days} days",
            )

    @contextmanager
    def _session(self, store: IndexStore, cancel: Cancellation | None = None) -> Iterator[Source]:
        """The logs of one snapshot of the index (a connection whose statements
        all see it), under the query guards (a slot, the timeout, the memory
        limit), stopped early if ``cancel`` is."""
        with self._slot(cancel), store.reading() as cursor:
            timer = threading.Timer(self.limits.timeout, cursor.interrupt)
            timer.start()
            if cancel is not None:
                cancel.bind(cursor.interrupt)
            logs = Source(store, cursor)
            try:
                cursor.execute("BEGIN TRANSACTION")
                yield logs
            except duckdb.Error as exc:
                if cancel is not None and cancel.cancelled:
                    raise ServiceError(ErrorCode.QUERY_TIMEOUT, "the query was cancelled") from None
                if logs.failure is not None:  # reading sealed logs failed, not the SQL
                    raise logs.failure from None
                raise _session_error(exc, store, self.limits) from None
            finally:
                if cancel is not None:
                    cancel.bind(None)
                timer.cancel()

    # ------------------------------------------------------------------ logs

    def run(
        self,
        store: IndexStore,
        config: IndexConfig,
        query: str,
        from_ns: int,
        to_ns: int,
        *,
        line: int = 100,
        offset: int = 0,
        reverse: bool = False,
        topic: str | None = None,
        cancel: Cancellation | None = None,
    ) -> QueryResult:
        started = time.perf_counter()
        self._check_range(from_ns, to_ns)
        if not 0 <= line <= self.limits.max_lines or offset < 0:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, f"line must be 0-{self.limits.max_lines}, offset >= 0"
            )
        search, sql = split_query(query)
        columns = store.columns()
        with self._session(store, cancel) as logs:
            where = _where(logs, search, config, columns, from_ns, to_ns, topic)
            if sql is not None:
                analysis = self._analysis(sql, where, config, columns)
                keys, rows = _fetch_bounded(logs, analysis, self.limits, _SMALLER_ANSWER)
                result = QueryResult(
                    True, keys=keys, rows=rows, where_query=search or "*", agg_query=sql
                )
            else:
                order = "DESC" if reverse else "ASC"
                page, matched = _page(logs, where, columns, order, line, offset, self.limits)
                result = QueryResult(False, logs=page, matched=matched, where_query=search or "*")
        result.elapsed_ms = int((time.perf_counter() - started) * 1000)
        return result

    def _analysis(self, sql: str, where: str, config: IndexConfig, columns: dict[str, str]) -> str:
        try:
            tree = sqlglot.parse_one(sql, read="presto")
        except sqlglot.errors.SqlglotError as exc:  # TokenError is not a ParseError
            raise ServiceError(ErrorCode.INVALID_QUERY, f"SQL syntax error: {exc}") from None
        except RecursionError:
            raise ServiceError(ErrorCode.INVALID_QUERY, "SQL nested too deeply") from None
        if not isinstance(tree, exp.Query):
            raise ServiceError(ErrorCode.INVALID_QUERY, "only SELECT queries are allowed")
        for select in tree.find_all(exp.Select):
            if select.args.get("from_", select.args.get("from")) is None:
                select.from_("log", copy=False)
        for table in tree.find_all(exp.Table):
            if isinstance(table.this, exp.Identifier):
                table.set("this", exp.to_identifier("log"))
                table.set("db", None)
                table.set("catalog", None)
            else:
                raise ServiceError(ErrorCode.INVALID_QUERY, "SQL may only read the table log")
        if any(tree.find_all(exp.Placeholder)):
            raise ServiceError(ErrorCode.INVALID_QUERY, "placeholders are not supported")
        _guard_generated_values(tree)
        _guard_formats(tree)
        if tree.args.get("limit") is None and tree.args.get("fetch") is None:
            # as SLS: an analysis without LIMIT answers its first 100 rows
            tree = tree.limit(self.limits.default_rows, copy=False)
        aliases = {a.alias for a in tree.find_all(exp.Alias)}
        fields = {c.name for c in tree.find_all(exp.Column) if c.name} - aliases
        star = any(
            isinstance(e, exp.Star) for q in tree.find_all(exp.Select) for e in q.expressions
        )
        if star:
            fields |= set(columns)  # select *: every field (as SLS answers it)
        selected = []
        for name in sorted(fields):
            if name in _BASE_COLUMNS:
                continue
            target = config.aliases.get(name, name)  # SQL may name a field by its alias
            value = field_expression(target, columns, config)
            key = config.key(target)
            if key is not None and key.type in _SQL_TYPES:
                value = f"TRY_CAST({value} AS {_SQL_TYPES[key.type]})"
            selected.append(f"{value} AS {_quote(name)}")
        # only the columns the SQL reads (names are case-insensitive): the others
        # would be read for nothing
        named = {f.lower() for f in fields}
        base = [
            f"{expr} AS {name}" for name, expr in _BASE_COLUMNS.items() if star or name in named
        ] or ["t AS __time_ns__"]
        cte = f"SELECT {', '.join(base + selected)} FROM {LOGS} WHERE {where}"
        final = tree.with_("log", as_=cte, dialect="duckdb", copy=False)
        try:
            return final.sql(dialect="duckdb")
        except RecursionError:
            raise ServiceError(ErrorCode.INVALID_QUERY, "SQL nested too deeply") from None

    # ------------------------------------------------------------ histograms

    def histogram(
        self,
        store: IndexStore,
        config: IndexConfig,
        query: str,
        from_ns: int,
        to_ns: int,
        *,
        interval: int | None = None,
        topic: str | None = None,
        cancel: Cancellation | None = None,
    ) -> list[Bucket]:
        """Counts of matching logs per time bucket (about 60 buckets unless
        ``interval``, in seconds, is given)."""
        self._check_range(from_ns, to_ns)
        search, sql = split_query(query)
        if sql is not None:
            raise ServiceError(ErrorCode.INVALID_QUERY, "histograms take a search, not SQL")
        span = (to_ns - from_ns + NANOS_PER_SECOND - 1) // NANOS_PER_SECOND
        if interval is None:
            interval = next((b for b in _BUCKETS if span / b <= 60), _BUCKETS[-1])
        if interval <= 0 or span / interval > 10_000:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "interval gives too many buckets")
        step = interval * NANOS_PER_SECOND
        start = from_ns - from_ns % step
        with self._session(store, cancel) as logs:
            where = _where(logs, search, config, store.columns(), from_ns, to_ns, topic)
            _, rows = _fetch(
                logs,
                f"SELECT (t - {start}) // {step} AS b, count(*) FROM {LOGS} "
                f"WHERE {where} GROUP BY b",
            )
        counts = {int(b): int(c) for b, c in rows}
        buckets = []
        for number in range((to_ns - start + step - 1) // step):
            low = start + number * step
            buckets.append(
                Bucket(
                    max(low, from_ns) // NANOS_PER_SECOND,
                    min(low + step, to_ns) // NANOS_PER_SECOND,
                    counts.get(number, 0),
                )
            )
        return buckets

    # --------------------------------------------------------------- context

    def context(
        self, store: IndexStore, shard: int, position: int, index: int, back: int, forward: int
    ) -> tuple[list[LogRow], list[LogRow]]:
        """The ``back`` logs before and ``forward`` logs after a log, in its shard."""
        if not (0 <= back <= 1000 and 0 <= forward <= 1000):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, "back and forward must be 0-1000")
        fields = store.columns()
        columns = _row_columns(fields)
        at = f"shard = {int(shard)}"
        before = f"(pos < {int(position)} OR (pos = {int(position)} AND idx < {int(index)}))"
        after = f"(pos > {int(position)} OR (pos = {int(position)} AND idx > {int(index)}))"
        with self._session(store) as logs:
            logs.around(shard, position, back, forward)
            _, older = _fetch_bounded(
                logs,
                f"SELECT {columns} FROM {LOGS} WHERE {at} AND {before} "
                f"ORDER BY pos DESC, idx DESC LIMIT {int(back)}",
                self.limits,
                _FEWER_LOGS,
            )
            _, newer = _fetch_bounded(
                logs,
                f"SELECT {columns} FROM {LOGS} WHERE {at} AND {after} "
                f"ORDER BY pos, idx LIMIT {int(forward)}",
                self.limits,
                _FEWER_LOGS,
            )
        return (
            [_log_row(r, fields) for r in reversed(older)],
            [_log_row(r, fields) for r in newer],
        )


def _page(
    logs: Source,
    where: str,
    columns: dict[str, str],
    order: str,
    line: int,
    offset: int,
    limits: QueryLimits,
) -> tuple[list[LogRow], int]:
    """One page of the logs a search keeps, and how many it keeps.  With sealed
    groups in scope, the page's logs are found first by the columns the search
    reads, and only then read whole (from the groups that hold them)."""
    ordering = f"ORDER BY t {order}, shard {order}, pos {order}, idx {order}"
    window = f"LIMIT {int(line)} OFFSET {int(offset)}"
    _, counted = _fetch(logs, f"SELECT count(*) FROM {LOGS} WHERE {where}")
    if not logs.groups:
        _, rows = _fetch_bounded(
            logs,
            f"SELECT {_row_columns(columns)} FROM {LOGS} WHERE {where} {ordering} {window}",
            limits,
            _FEWER_LOGS,
        )
        return [_log_row(r, columns) for r in rows], int(counted[0][0])
    _, keys = _fetch(logs, f"SELECT shard, pos, idx FROM {LOGS} WHERE {where} {ordering} {window}")
    if not keys:
        return [], int(counted[0][0])
    # the page's logs by key: a join with the keys (a list of conditions would be
    # tested on every row of the index's table)
    listed = ", ".join(f"({int(s)}, {int(p)}, {int(i)})" for s, p, i in keys)
    _, rows = _fetch_bounded(
        logs,
        f"SELECT {_row_columns(columns)} FROM {LOGS} "
        f"JOIN (VALUES {listed}) AS page(page_shard, page_pos, page_idx) "
        f"ON shard = page_shard AND pos = page_pos AND idx = page_idx {ordering}",
        limits,
        _FEWER_LOGS,
        only=_by_group(keys),
    )
    return [_log_row(r, columns) for r in rows], int(counted[0][0])


def _by_group(keys: list[tuple[Any, ...]]) -> dict[tuple[int, int], list[int]]:
    """(shard, position, index) keys as the indexes in each (shard, position)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for shard, pos, idx in keys:
        groups.setdefault((int(shard), int(pos)), []).append(int(idx))
    return groups


def _fetch(logs: Source, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A small answer (a count, a page's keys, a histogram) of ``sql`` over ``logs``."""
    result = logs.db.execute(logs.statement(sql))
    return [d[0] for d in result.description or []], result.fetchall()


_SMALLER_ANSWER = "aggregate further or lower the LIMIT"
_FEWER_LOGS = "ask for fewer logs at a time"


def _fetch_bounded(
    logs: Source,
    sql: str,
    limits: QueryLimits,
    advice: str,
    only: dict[tuple[int, int], list[int]] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The answer of ``sql`` over ``logs`` (``only`` those sealed logs, if given:
    ``Source.statement``), refused once it passes ``max_rows`` rows or takes about
    ``max_answer_bytes`` of memory: read in chunks, so that an answer of millions of
    rows never sits in memory whole (``select * from log`` over 2M logs took 820 MB),
    nor a page of a few huge logs."""
    result = logs.db.execute(logs.statement(sql, only=only))
    keys = [d[0] for d in result.description or []]
    rows: list[tuple[Any, ...]] = []
    size = 0
    many = 1  # rows to fetch next: one at a time while they are large
    while chunk := result.fetchmany(many):
        rows.extend(chunk)
        cost = sum(_ROW_COST + sum(_value_size(v) for v in row) for row in chunk)
        size += cost
        many = _ANSWER_CHUNK if cost < _LARGE_ROW * len(chunk) else 1
        if len(rows) > limits.max_rows or size > limits.max_answer_bytes:
            raise ServiceError(
                ErrorCode.QUERY_TOO_LARGE,
                f"the answer is larger than {limits.max_rows:,} rows or "
                f"{limits.max_answer_bytes >> 20} MB: {advice}",
            )
    return keys, rows


_ANSWER_CHUNK = 256  # rows fetched at a time while they are small...
_LARGE_ROW = 4096  # ...that is, smaller than this on average; else one by one, so
# that a page of huge logs passes the bound by one log at most (8 logs of 20 MiB
# took 660 MB before the refusal when they came 256 at a time)
_ROW_COST = 200  # a row's share of the answer rendered as JSON


def _value_size(value: Any) -> int:
    """About the memory a value of an answer takes, as a Python object."""
    if isinstance(value, str | bytes):
        return 56 + len(value)
    if isinstance(value, list | tuple | dict):
        return 56 + len(str(value))
    return 32


def _where(
    logs: Source,
    search: str,
    config: IndexConfig,
    columns: dict[str, str],
    from_ns: int,
    to_ns: int,
    topic: str | None,
) -> str:
    """The rows a search keeps: its predicate, the time range ``[from, to)`` and the
    topic; and, when the token filter rules out most blocks, the blocks it may be in.
    Narrows ``logs`` to the sealed groups that may hold such rows."""
    store = logs.store
    node = parse_search(search)
    need = required_tokens(node, config, columns)
    candidates = candidate_blocks(logs.db, need) if need is not None else None
    blocks = candidates.blocks if candidates is not None else None
    logs.narrow(from_ns=from_ns, to_ns=to_ns, blocks=blocks)
    # the filter knows nothing of unfiltered rows, so it may only skip fields when
    # there are none
    exact = candidates if not store.has_unfiltered_rows else None
    compiler = Compiler(config, columns, exact, logs)
    predicate = compiler.compile(node)
    rows = compiler.required_rows(node)
    if rows is not None:  # the search keeps only these rows: read no other sealed log
        logs.keep_rows(rows)
    where = f"t >= {int(from_ns)} AND t < {int(to_ns)} AND {predicate}"
    if topic is not None:
        where += f" AND topic = {sql_string(topic)}"
    if blocks is None:
        return where
    listed = ", ".join(str(b) for b in sorted(blocks))
    within = f"blk IN (SELECT unnest([{listed}]::INTEGER[]))" if blocks else "FALSE"
    if store.has_unfiltered_rows:
        within = f"(blk < {store.unfiltered_below} OR {within})"
    return f"{within} AND {where}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pairs(entries: Any) -> tuple[tuple[str, str], ...]:
    return tuple((e["key"], e["value"]) for e in entries or ())


def _row_columns(fields: dict[str, str]) -> str:
    """The select list of a whole log: base columns, tags, extra, then every field."""
    return ", ".join(
        ["t, shard, pos, idx, topic, source, map_entries(tags), map_entries(extra)"]
        + [f'"{col}"' for col in fields.values()]
    )


def _log_row(row: tuple[Any, ...], fields: dict[str, str]) -> LogRow:
    t, shard, pos, idx, topic, source, tags, extra, *values = row
    contents = [
        (name, value) for name, value in zip(fields, values, strict=True) if value is not None
    ]
    contents.extend(_pairs(extra))
    return LogRow(
        int(t), int(shard), int(pos), int(idx), topic, source, _pairs(tags), tuple(contents)
    )


def _session_error(exc: duckdb.Error, store: IndexStore, limits: QueryLimits) -> ServiceError:
    """What a DuckDB error during a query means to the caller."""
    if store.closed:  # the index was deleted while the query ran
        return index_deleted()
    if isinstance(exc, duckdb.InterruptException):
        return ServiceError(
            ErrorCode.QUERY_TIMEOUT,
            f"the query ran longer than {limits.timeout:g} s; narrow the time range or the search",
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ServiceError(ErrorCode.QUERY_TOO_LARGE, "the query needs more memory than allowed")
    return _sql_error(exc)


# Functions that build a value sized by an argument (a list of a billion numbers, a
# string repeated a billion times) allocate outside DuckDB's memory limit and do not
# see an interrupt until they are done: one call took 14 GB and 20 s past the
# timeout.  Each call is checked per row before it runs; a vector holds 2048 rows.
_MAX_LIST_VALUES = 20_000  # two weeks of minutes
_MAX_STRING_CHARS = 100_000
_MAX_GUARDED_DEPTH = 4  # each guard repeats its argument: 2**depth copies of the innermost


def _series_size(start: str, end: str, step: str) -> str:
    """How many values generate_series(start, end, step) makes, numbers or times."""
    numbers = (
        f"abs(TRY_CAST({end} AS DOUBLE) - TRY_CAST({start} AS DOUBLE)) "
        f"/ nullif(abs(TRY_CAST({step} AS DOUBLE)), 0)"
    )
    times = (
        f"abs(epoch(TRY_CAST({end} AS TIMESTAMP)) - epoch(TRY_CAST({start} AS TIMESTAMP))) "
        f"/ nullif(abs(epoch(TRY_CAST({step} AS INTERVAL))), 0)"
    )
    return f"(coalesce({numbers}, {times}) + 1)"


def _generated_size(node: Any) -> tuple[str, str, int, Any] | None:
    """(function name, SQL for the size it would build, the limit, the argument that
    sets the size) if ``node`` is such a call (not an exhaustive list: a format
    width, for one, can also build a long string)."""

    def sql(arg: Any, default: str = "1") -> str:
        return default if arg is None else arg.sql(dialect="duckdb")

    def repeat_size(text: Any, times: Any) -> str:
        return (
            f"TRY_CAST({sql(times)} AS DOUBLE) * greatest(length(CAST({sql(text)} AS VARCHAR)), 1)"
        )

    if isinstance(node, exp.GenerateSeries):
        start, end, step = (node.args.get(k) for k in ("start", "end", "step"))
        size = _series_size(sql(start), sql(end), sql(step))
        return "sequence", size, _MAX_LIST_VALUES, end
    if isinstance(node, exp.Repeat):
        times = node.args.get("times")
        return "repeat", repeat_size(node.this, times), _MAX_STRING_CHARS, times
    if isinstance(node, exp.Pad):
        return (
            "lpad/rpad",
            f"TRY_CAST({sql(node.expression)} AS DOUBLE)",
            _MAX_STRING_CHARS,
            (node.expression),
        )
    if isinstance(node, exp.Space):
        return "space", f"TRY_CAST({sql(node.this)} AS DOUBLE)", _MAX_STRING_CHARS, node.this
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        args = node.expressions
        if name in ("range", "generate_series") and 1 <= len(args) <= 3:
            start, end = ("0", args[0]) if len(args) == 1 else (sql(args[0]), args[1])
            step = sql(args[2]) if len(args) == 3 else "1"
            return name, _series_size(start, sql(end), step), _MAX_LIST_VALUES, end
        if name in ("list_resize", "array_resize") and len(args) >= 2:
            return name, f"TRY_CAST({sql(args[1])} AS DOUBLE)", _MAX_LIST_VALUES, args[1]
        if name == "repeat" and len(args) == 2:
            return name, repeat_size(args[0], args[1]), _MAX_STRING_CHARS, args[1]
    return None


# DuckDB's own list of functions that give another value on each call (random,
# uuidv4, nextval, ...), and sqlglot's names for those it parses itself
def _volatile_functions() -> frozenset[str]:
    with duckdb.connect() as db:
        rows = db.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE stability = 'VOLATILE'"
        ).fetchall()
    # error() is never folded but always raises: the guards themselves use it
    return frozenset(str(name).lower() for (name,) in rows) - {"error"} | {"rand", "uuid"}


_VOLATILE = _volatile_functions()


def _volatile(node: Any) -> bool:
    for n in node.walk():
        if isinstance(n, exp.Anonymous):
            name = str(n.name).lower()
        elif isinstance(n, exp.Func):
            name = n.sql_name().lower()
        else:
            continue
        if isinstance(n, exp.Rand) or name in _VOLATILE:
            return True
    return False


# a conversion: %[argument$][flags][width][.precision], where a width or precision
# may be * or *argument$ (taken from an argument)
_PRINTF_SPEC = re.compile(r"%(?:%|(?:\d+\$)?[-+ #0']*(\*(?:\d+\$)?|\d+)?(?:\.(\*(?:\d+\$)?|\d+))?)")
_FMT_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)(\{?)")


def _guard_formats(tree: exp.Query) -> None:
    """A width or precision in a ``printf``/``format`` string builds a string that
    long (``printf('%0200000d', 1)``): the format must be a constant whose widths
    stay within the string guard, and none may come from an argument."""
    for node in tree.find_all(exp.Format, exp.Anonymous):
        if isinstance(node, exp.Format):
            name, pattern = "format", node.this
        elif str(node.this).lower() in ("printf", "sprintf", "format"):
            name = str(node.this).lower()
            pattern = node.expressions[0] if node.expressions else None
        else:
            continue
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise ServiceError(
                ErrorCode.INVALID_QUERY, f"the format given to {name} must be a constant string"
            )
        text = pattern.this
        widths = [w for m in _PRINTF_SPEC.finditer(text) for w in m.groups() if w]
        for replacement in _FMT_FIELD.finditer(text):
            inside, nested = replacement.groups()
            if nested:  # "{:>{}}": a width from an argument
                widths.append("*")
            elif inside is not None and ":" in inside:
                widths += re.findall(r"\d+", inside.split(":", 1)[1])
        if any(w.startswith("*") or int(w) > _MAX_STRING_CHARS for w in widths):
            raise ServiceError(
                ErrorCode.INVALID_QUERY,
                f"widths in the format of {name} must be constants of at most "
                f"{_MAX_STRING_CHARS:,} characters",
            )


def _guard_generated_values(tree: exp.Query) -> None:
    # a column keeps the name it would have had: its text before the guard
    for select in tree.find_all(exp.Select):
        for i, expression in enumerate(select.expressions):
            if not isinstance(expression, exp.Alias | exp.Star) and any(
                _generated_size(n) for n in expression.find_all(exp.Func)
            ):
                # DuckDB names a column by the expression, functions in lower case
                name = expression.sql(dialect="duckdb", normalize_functions="lower")
                select.expressions[i] = exp.alias_(expression, name, quoted=True)
    try:
        _guard_sizes(tree)
    except RecursionError:
        raise ServiceError(ErrorCode.INVALID_QUERY, "SQL nested too deeply") from None


def _guard_sizes(tree: exp.Query) -> None:
    """Check the size of every call that builds a value sized by an argument, in
    that argument: ``f(CASE WHEN size > limit THEN error(...) ELSE arg END)``.
    (Guarding the call itself would not do: DuckDB folds a constant call such as
    ``sequence(1, 1e9)`` while planning, whatever branch it is in; ``error`` is
    never folded, so neither is the guarded argument.)  Innermost calls first."""
    guarded = [n for n in tree.find_all(exp.Func) if _generated_size(n) is not None]
    ids = {id(n) for n in guarded}
    for node in guarded:
        depth = sum(1 for parent in _ancestors(node) if id(parent) in ids)
        if depth >= _MAX_GUARDED_DEPTH:
            raise ServiceError(
                ErrorCode.INVALID_QUERY,
                f"sequence, repeat, lpad and the like nest {_MAX_GUARDED_DEPTH} deep at most",
            )
    for node in reversed(guarded):
        # sized again now: an inner call's argument may have been guarded since
        found = _generated_size(node)
        if found is None or found[3] is None:
            continue
        name, size, limit, argument = found
        if _volatile(argument):  # checked once and used once would be two values
            raise ServiceError(
                ErrorCode.INVALID_QUERY, f"the size given to {name} may not be random"
            )
        unit = "values" if limit == _MAX_LIST_VALUES else "characters"
        message = sql_string(f"{name} would build more than {limit:,} {unit} for one row")
        guard = sqlglot.parse_one(
            f"CASE WHEN {size} > {limit} THEN error({message}) END", read="duckdb"
        )
        argument.replace(guard)
        guard.set("default", argument)


def _ancestors(node: Any) -> Iterator[Any]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _sql_error(exc: duckdb.Error) -> ServiceError:
    message = str(exc)
    missing = _MISSING_FUNCTION.search(message)
    if missing:
        return ServiceError(
            ErrorCode.INVALID_QUERY, f"unsupported SQL function: {missing.group(1)}"
        )
    if isinstance(exc, duckdb.PermissionException):
        return ServiceError(ErrorCode.INVALID_QUERY, "SQL may only read the table log")
    first_line = message.splitlines()[0] if message else type(exc).__name__
    return ServiceError(ErrorCode.INVALID_QUERY, f"SQL error: {first_line}")
