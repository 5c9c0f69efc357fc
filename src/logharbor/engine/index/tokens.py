"""The token prefilter: per-block bloom filters that make rare-token searches fast.

Every append is cut into **blocks** of up to ``BLOCK_ROWS`` consecutive rows; each
row of ``logs`` carries its block id (``blk``).  For each block, the token filter
holds a bloom filter of the block's **tokens**: the runs of letters and digits of
every field value, the topic, the source and the tag values, lowercased.  A search
asks the filter which blocks may hold the tokens its every match must contain, and
the query scans only those blocks; the exact predicate still decides each row, so
the filter only has to return a superset.

**Lanes**: each token is hashed together with the lane of the field it came from
(``lane``: a hash of the field name, one of ``LANES``), so a block's filter says
which lanes hold a token.  A field search probes its field's lane only; a
full-text search probes the lanes of the logstore's fields (all probes of a search
in one query, at most ``MAX_PROBES``).  The search then reads each field only in the
blocks whose filter holds every token of the word in that field's lane
(``Candidates.lane_blocks``; ``search.Compiler`` looks a rare word's rows up that
way before the query runs): a rare word that only messages contain is not looked
for in the other columns.  The lane is part of the hashed value, so filters written
before lanes fail the hash check below and their blocks are scanned.

Why exact: a search word matches a value when the value (lowercased by DuckDB unless
the configuration is case-sensitive) contains the word between two separators of
the configuration.  When every such separator is a non-letter, non-digit character
(true of SLS's defaults), each run of letters and digits of the word is also a run
of the value, so the block holding the value has it as a token (lowercased on both
sides, whatever the configuration's case rule).  Terms whose
separators include a letter or digit, prefix words (their last run may continue),
``not`` and comparisons constrain nothing (see ``search.required_tokens``).  Both
sides split with the same regular expression (Arrow's RE2), both lowercase with
DuckDB's ``lower`` and hash with DuckDB's ``hash``.

Layout (tables ``blooms_0`` to ``blooms_15``, and the view ``blooms`` of them all):
a block's filter is split into 64 stripes of ``cells`` 256-bit cells each (a
split-block bloom filter: a token sets one bit in each of the eight 32-bit words of
one cell, ``BITS_PER_TOKEN`` bits of filter per distinct token); one row per
non-empty (block, stripe, cell), in the table of its stripe modulo 16.  A lookup
reads one table, and in it the rows of one stripe.

Why bloom filters and not an inverted index (tantivy): measured on the bench corpus,
tantivy spends about 5 µs per distinct term, some 8 µs of CPU per access log with a
request id, where these filters cost about 2 µs per log, off the append's critical
path (``IndexStore.prepare``); and they live in the index's own DuckDB transaction.

Consistency: the blooms are written in the append's transaction, with the rows and
the progress; retention deletes the blooms of blocks it emptied; deleting the index
deletes the DuckDB file, blooms included.  A DuckDB whose ``hash`` differs from the
one that wrote the blooms (checked at open) makes the old blocks unfiltered: they
are scanned until the idle indexer has rebuilt their blooms
(``IndexStore.refilter_step``).  Rows written before the filter existed have ``blk = -1`` and are
always scanned too.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

BLOCK_ROWS = 1024
BITS_PER_TOKEN = 16
STRIPES = 64
PARTITIONS = 16  # tables the stripes are spread over
BLOOM_TABLES = tuple(f"blooms_{k}" for k in range(PARTITIONS))
CELL_BITS = 256
# a block is scanned without looking at the filter once this share of blocks may match
MAX_CANDIDATE_SHARE = 0.2
# (lane, token) lookups of one search, at most; a search needing more is not filtered
MAX_PROBES = 64
# the characters that end a token (everything but letters and digits), as RE2 sees them
SEPARATOR = r"[^\p{L}\p{N}]"
_SPLIT = SEPARATOR + "+"
_SALTS = (
    0x47B6137B,
    0x44974D91,
    0x8824AD5B,
    0xA2B7289D,
    0x705495C7,
    0x2DF1424B,
    0x9EFC4947,
    0x5C6BFB31,
)
_HASH_PROBE = "LogHarbor token probe: Ünïcödé 42"
LANES = 8
TAG_LANE_NAME = "__tag__"  # every tag value is in this name's lane
_TAG_ENTRY = pa.list_(
    pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
)

_BLOOM_COLUMNS = f"""(
    blk INTEGER NOT NULL,
    stripe UTINYINT NOT NULL,
    cells USMALLINT NOT NULL,
    cell USMALLINT NOT NULL,
    {", ".join(f"w{j} UINTEGER NOT NULL" for j in range(len(_SALTS)))}
)"""
SCHEMA = "\n".join(
    [f"CREATE TABLE IF NOT EXISTS {table} {_BLOOM_COLUMNS};" for table in BLOOM_TABLES]
    + [
        "CREATE OR REPLACE VIEW blooms AS "
        + " UNION ALL ".join(f"SELECT * FROM {table}" for table in BLOOM_TABLES)
        + ";",
        "CREATE TABLE IF NOT EXISTS blocks ("
        "blk INTEGER NOT NULL, shard INTEGER NOT NULL, last_pos BIGINT NOT NULL);",
        "CREATE TABLE IF NOT EXISTS token_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);",
    ]
)


# ----------------------------------------------------------------- writing


def block_numbers(rows: int) -> pa.Array:
    """The block of each of ``rows`` appended rows, counted from 0."""
    return pc.divide(_ordinals(rows), BLOCK_ROWS).cast(pa.int32())


@functools.lru_cache(maxsize=4)
def _ordinal_range(size: int) -> pa.Array:
    return pa.array(range(size), pa.int32())


def _ordinals(rows: int) -> pa.Array:
    size = 1 << max(16, (rows - 1).bit_length())
    return _ordinal_range(size).slice(0, rows)


def lane(field: str) -> int:
    """The lane of a field's tokens (``__topic__``, ``__source__``, ``__tag__`` for
    tag values, else the field's name)."""
    return zlib.crc32(field.encode()) % LANES


def table_tokens(table: pa.Table, blocks: pa.Array) -> pa.Table:
    """The tokens of a decoded table as ``(blk, lane, tok)`` rows, where ``blk`` is
    the row's entry of ``blocks``.  Not lowercased yet (DuckDB does that) and with
    duplicates: a value repeated within a block is tokenized once."""
    owners: list[pa.Array] = []
    lanes: list[pa.Array] = []
    tokens: list[pa.Array] = []
    for name in table.column_names:
        if name == "tags":
            entries = table[name].combine_chunks().cast(_TAG_ENTRY)
            values = pc.list_flatten(entries).field("value")
            where = pc.take(blocks, pc.list_parent_indices(entries))
            field = TAG_LANE_NAME
        elif name in ("topic", "source"):
            values, where, field = table[name].combine_chunks(), blocks, f"__{name}__"
        elif name.startswith("c:"):
            values, where, field = table[name].combine_chunks(), blocks, name[2:]
        else:
            continue
        owner, token = _value_tokens(values, where)
        owners.append(owner)
        lanes.append(pa.repeat(pa.scalar(lane(field), pa.uint8()), len(token)))
        tokens.append(token)
    if not tokens:
        return pa.table(
            {
                "blk": pa.array([], pa.int32()),
                "lane": pa.array([], pa.uint8()),
                "tok": pa.array([], pa.string()),
            }
        )
    return pa.table(
        {
            "blk": pa.chunked_array(owners, pa.int32()),
            "lane": pa.chunked_array(lanes, pa.uint8()),
            "tok": pa.chunked_array(tokens, pa.string()),
        }
    )


def _value_tokens(values: pa.Array, blocks: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Split each distinct value once; a value repeated in a block counts once."""
    encoded = pc.dictionary_encode(values)
    words = pc.split_pattern_regex(encoded.dictionary, _SPLIT)
    index = encoded.indices
    if len(encoded.dictionary) * 4 < len(values):
        pairs = pc.unique(
            pc.add(pc.shift_left(blocks.cast(pa.int64()), 32), index.cast(pa.int64()))
        ).drop_null()
        blocks = pc.shift_right(pairs, 32).cast(pa.int32())
        index = pc.bit_wise_and(pairs, 0xFFFFFFFF)
    else:
        present = pc.is_valid(index)
        blocks, index = blocks.filter(present), index.filter(present)
    lists = pc.take(words, index)
    owners = pc.take(blocks, pc.list_parent_indices(lists)).cast(pa.int32())
    return owners, pc.list_flatten(lists)


def _cell_words(h: str) -> str:
    return ", ".join(
        f"bit_or((1::UINTEGER << ((((({h}) >> 32) * {salt}) & 4294967295) >> 27)::INTEGER)) AS w{j}"
        for j, salt in enumerate(_SALTS)
    )


def bloom_rows(db: duckdb.DuckDBPyConnection, table: pa.Table, blocks: pa.Array) -> pa.Table:
    """The bloom rows of a decoded table whose rows are in ``blocks`` (numbered
    from 0), computed on ``db`` without touching the index."""
    per_stripe = STRIPES * CELL_BITS
    db.register("incoming_tokens", table_tokens(table, blocks))
    try:
        return db.sql(f"""
WITH h AS MATERIALIZED (
    SELECT blk, hash(lower(tok), lane) AS h FROM incoming_tokens WHERE tok <> ''
),
sized AS (
    SELECT blk, least(65535, greatest(1, ceil(
        approx_count_distinct(h) * {BITS_PER_TOKEN} / {per_stripe})))::USMALLINT AS cells
    FROM h GROUP BY blk
)
SELECT h.blk, (h.h & {STRIPES - 1})::UTINYINT AS stripe, sized.cells,
    ((((h.h >> 6) & 65535) * sized.cells) >> 16)::USMALLINT AS cell,
    {_cell_words("h.h")}
FROM h JOIN sized ON h.blk = sized.blk
GROUP BY h.blk, stripe, sized.cells, cell
""").to_arrow_table()
    finally:
        db.unregister("incoming_tokens")


def hash_probe(db: duckdb.DuckDBPyConnection) -> str:
    """DuckDB's hash of a fixed token: blooms written under another value are stale."""
    row: Any = db.execute("SELECT hash(lower(?), 1::UTINYINT)", [_HASH_PROBE]).fetchone()
    return str(row[0])


# ----------------------------------------------------------------- reading


@functools.lru_cache(maxsize=256)
def word_tokens(word: str) -> tuple[str, ...]:
    """The tokens of a search word, split as values are split for the filter."""
    parts: list[Any] = pc.split_pattern_regex(pa.array([word]), _SPLIT)[0].as_py()
    return tuple(part for part in parts if part)


@functools.lru_cache(maxsize=256)
def separators_split_tokens(separators: tuple[str, ...]) -> bool:
    """True when every separator of a configuration also ends a filter token, so
    that a word found between separators is made of whole filter tokens."""
    if not separators:
        return False
    matched = pc.match_substring_regex(pa.array(list(separators)), f"^{SEPARATOR}$")
    return bool(pc.all(matched).as_py())


@dataclass(frozen=True, slots=True)
class Tokens:
    """Every matching row's block holds all of these tokens in one of these lanes
    (one lane for a field search; the lanes of every field for full text)."""

    tokens: frozenset[str]
    lanes: frozenset[int]


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Need, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Need, ...]


Need = Tokens | AllOf | AnyOf


def _probes(need: Need) -> Iterable[tuple[int, str]]:
    if isinstance(need, Tokens):
        for token in need.tokens:
            for number in need.lanes:
                yield number, token
    else:
        for child in need.children:
            yield from _probes(child)


def _probe_sql(value: int) -> str:
    """The bloom rows that hold a token of hash ``value``."""
    stripe = value & (STRIPES - 1)
    slot = (value >> 6) & 65535
    high = value >> 32
    masks = [1 << (((high * salt) & 0xFFFFFFFF) >> 27) for salt in _SALTS]
    bits = " AND ".join(f"(w{j} & {mask}) <> 0" for j, mask in enumerate(masks))
    return (
        f"SELECT DISTINCT blk FROM {BLOOM_TABLES[stripe % PARTITIONS]} WHERE stripe = {stripe} "
        f"AND cell = ((cells::UBIGINT * {slot}) >> 16) AND {bits}"
    )


@dataclass(frozen=True, slots=True)
class Candidates:
    """What the token filter said of a search: ``blocks``, the blocks that may hold
    a matching row (None: too many to be worth filtering), and per probed (lane,
    token) the blocks that may hold it."""

    blocks: set[int] | None
    found: dict[tuple[int, str], set[int]]
    total: int = 0  # blocks in the filter

    def rare(self, blocks: int) -> bool:
        """Whether so few blocks are worth filtering on (see ``MAX_CANDIDATE_SHARE``)."""
        return blocks <= MAX_CANDIDATE_SHARE * max(1, self.total)

    def lane_blocks(self, field: str, tokens: Iterable[str]) -> set[int] | None:
        """The blocks that hold every one of ``tokens`` in ``field``'s lane (so
        that only there can the field match a word made of them); None when the
        filter was not asked."""
        number = lane(field)
        sets = [self.found.get((number, token)) for token in tokens]
        if not sets or any(found is None for found in sets):
            return None
        return set.intersection(*[found for found in sets if found is not None])


def candidate_blocks(db: duckdb.DuckDBPyConnection, need: Need) -> Candidates:
    """Ask the token filter about ``need`` (one scan of a bloom table per probe,
    all in one query)."""
    probes = sorted(set(_probes(need)))
    if not probes:  # full text over a logstore with no fields yet
        return Candidates(set(), {})
    if len(probes) > MAX_PROBES:  # planning the lookup would cost more than scanning
        return Candidates(None, {})
    columns = ", ".join(f"hash(lower(?), {int(number)}::UTINYINT)" for number, _ in probes)
    row: Any = db.execute(f"SELECT {columns}", [token for _, token in probes]).fetchone()
    hashes = [int(h) for h in row]
    union = " UNION ALL ".join(
        f"SELECT {k} AS probe, blk FROM ({_probe_sql(h)})" for k, h in enumerate(hashes)
    )
    found: dict[tuple[int, str], set[int]] = {probe: set() for probe in probes}
    for k, blk in db.execute(union).fetchall():
        found[probes[int(k)]].add(int(blk))
    blocks = _evaluate(need, found)
    row = db.execute("SELECT count(*) FROM blocks").fetchone()
    candidates = Candidates(blocks, found, int(row[0]) if row else 0)
    if not candidates.rare(len(blocks)):
        return Candidates(None, found, candidates.total)
    return candidates


def _evaluate(need: Need, found: dict[tuple[int, str], set[int]]) -> set[int]:
    if isinstance(need, Tokens):
        blocks: set[int] = set()
        for number in need.lanes:
            sets = [found[(number, t)] for t in need.tokens]
            if sets:
                blocks |= set.intersection(*sets)
        return blocks
    results = [_evaluate(child, found) for child in need.children]
    if isinstance(need, AllOf):
        return set.intersection(*results)
    return set.union(*results)
