"""The search language, and its translation into a DuckDB predicate.

Grammar (keywords are case-insensitive)::

    query      := or_expr | "*" | ""
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr (["and"] not_expr)*          # juxtaposition means AND
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | "*" | field_expr | term
    field_expr := FIELD ":" value                       # token (or phrase) in the field
                | FIELD ":" WORD "*"                    # a token of the field starts with WORD
                | FIELD (">" | ">=" | "<" | "<=" | "=") NUMBER
                | FIELD "in" ("[" | "(") NUMBER NUMBER ("]" | ")")
    term       := WORD | WORD "*" | PHRASE               # full-text: any field's value
    value      := WORD | PHRASE | "*"                    # "field: *" = the field exists
    FIELD      := a name, or __topic__, __source__, __tag__:NAME, or a "quoted name"
    PHRASE     := "double-quoted text"

A word matches a whole token: values are split at the separators of the index
configuration (the line's for full-text, the key's for a field), so ``error``
matches ``an error occurred`` but not ``errors``; ``err*`` matches both.  Matching
ignores case unless the configuration says otherwise.  A phrase matches its tokens
in sequence.  Comparisons and ranges treat the field as a number.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import duckdb

from ...protocol.errors import ErrorCode, ServiceError
from .config import DEFAULT_TOKENS, IndexConfig, KeyConfig
from .sealed import LOGS, ROWID, Source
from .store import MAX_COLUMNS
from .tokens import (
    LANES,
    TAG_LANE_NAME,
    AllOf,
    AnyOf,
    Candidates,
    Need,
    Tokens,
    lane,
    separators_split_tokens,
    word_tokens,
)

_OPERATORS = (">=", "<=", ">", "<", "=")
_MAX_LISTED_BLOCKS = 256  # a field's blocks inlined into its predicate, at most
_MAX_HITS = 10_000  # rows of a word looked up ahead of its query, at most
_KEYWORDS = {"and", "or", "not", "in"}


class SearchSyntaxError(ServiceError):
    def __init__(self, message: str, position: int, text: str) -> None:
        pointer = f"{text}\n{' ' * position}^"
        super().__init__(
            ErrorCode.INVALID_QUERY,
            f"search syntax error at position {position}: {message}\n{pointer}",
        )
        self.position = position


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word, phrase, op, lparen, rparen, lbracket, rbracket, colon, star, end
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            j = i + 1
            buf = []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text):
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= len(text):
                raise SearchSyntaxError("unterminated quoted phrase", i, text)
            tokens.append(Token("phrase", "".join(buf), i))
            i = j + 1
        elif text.startswith(_OPERATORS, i):
            op = next(o for o in _OPERATORS if text.startswith(o, i))
            tokens.append(Token("op", op, i))
            i += len(op)
        elif ch in "()[]:*":
            kind = {
                "(": "lparen",
                ")": "rparen",
                "[": "lbracket",
                "]": "rbracket",
                ":": "colon",
                "*": "star",
            }[ch]
            tokens.append(Token(kind, ch, i))
            i += 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in '"()[]:*<>=':
                j += 1
            word = text[i:j]
            # __tag__:key is one field name
            if word == "__tag__" and text.startswith(":", j):
                k = j + 1
                while k < len(text) and not text[k].isspace() and text[k] not in '"()[]:*<>=':
                    k += 1
                word, j = text[i:k], k
            tokens.append(Token("word", word, i))
            i = j
    tokens.append(Token("end", "", len(text)))
    return tokens


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True, slots=True)
class All:
    pass


@dataclass(frozen=True, slots=True)
class Text:
    field: str | None  # None: full text
    words: tuple[str, ...]  # several: a phrase
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Exists:
    field: str


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node = All | Text | Exists | Compare | Range | Not | And | Or


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, message: str, token: Token | None = None) -> SearchSyntaxError:
        return SearchSyntaxError(message, (token or self.peek()).position, self.text)

    def is_keyword(self, token: Token, word: str) -> bool:
        return token.kind == "word" and token.text.lower() == word

    def parse(self) -> Node:
        if self.peek().kind == "end":
            return All()
        node = self.or_expr()
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek().text!r}")
        return node

    def or_expr(self) -> Node:
        children = [self.and_expr()]
        while self.is_keyword(self.peek(), "or"):
            self.take()
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> Node:
        children = [self.not_expr()]
        while True:
            token = self.peek()
            if self.is_keyword(token, "and"):
                self.take()
            elif token.kind in ("end", "rparen") or self.is_keyword(token, "or"):
                break
            children.append(self.not_expr())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_expr(self) -> Node:
        if self.is_keyword(self.peek(), "not"):
            self.take()
            return Not(self.not_expr())
        return self.primary()

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "lparen":
            self.take()
            node = self.or_expr()
            if self.peek().kind != "rparen":
                raise self.error("expected ')'")
            self.take()
            return node
        if token.kind == "star":
            self.take()
            return All()
        if token.kind == "phrase":
            self.take()
            if self.peek().kind in ("colon", "op") or self.is_keyword(self.peek(), "in"):
                return self.field_expr(token.text)  # a quoted field name
            return Text(None, tuple(token.text.split()) or ("",))
        if token.kind == "word":
            if token.text.lower() in _KEYWORDS:
                raise self.error(f"{token.text!r} needs an operand")
            self.take()
            follower = self.peek()
            if follower.kind in ("colon", "op") or self.is_keyword(follower, "in"):
                return self.field_expr(token.text)
            if follower.kind == "star":
                self.take()
                return Text(None, (token.text,), prefix=True)
            return Text(None, (token.text,))
        raise self.error("expected a word, a phrase, a field or '('")

    def number(self) -> float:
        token = self.take()
        try:
            value = float(token.text)
        except ValueError:
            raise self.error(f"{token.text!r} is not a number", token) from None
        if not math.isfinite(value):
            raise self.error(f"{token.text!r} is not a finite number", token)
        return value

    def field_expr(self, field: str) -> Node:
        token = self.take()
        if token.kind == "op":
            return Compare(field, token.text, self.number())
        if token.kind == "word":  # "in"
            opener = self.take()
            if opener.kind not in ("lbracket", "lparen"):
                raise self.error("expected '[' or '(' after 'in'", opener)
            low, high = self.number(), self.number()
            closer = self.take()
            if closer.kind not in ("rbracket", "rparen"):
                raise self.error("expected ']' or ')'", closer)
            return Range(field, low, high, opener.kind == "lbracket", closer.kind == "rbracket")
        value = self.take()  # after ':'
        if value.kind == "star":
            return Exists(field)
        if value.kind == "phrase":
            return Text(field, tuple(value.text.split()) or ("",))
        if value.kind == "word" and value.text.lower() not in ("and", "or"):
            if self.peek().kind == "star":
                self.take()
                return Text(field, (value.text,), prefix=True)
            return Text(field, (value.text,))
        raise self.error(f"expected a value after '{field}:'", value)


def parse_search(text: str) -> Node:
    try:
        return _Parser(text.strip()).parse()
    except RecursionError:
        raise SearchSyntaxError("nested too deeply", 0, text[:200]) from None


# ------------------------------------------------------------ to SQL


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled; NUL is not allowed in names)."""
    return "'" + value.replace("\x00", "").replace("'", "''") + "'"


def _like(text: str) -> str:
    """``text`` as a LIKE pattern with ``!`` as the escape character."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _literal(text: str) -> str:
    """``text`` as an RE2 literal: anything but letters, digits and _ as \\x{HEX}."""
    return "".join(c if c.isalnum() or c == "_" else f"\\x{{{ord(c):x}}}" for c in text)


def _separators(tokens: tuple[str, ...]) -> str:
    return "".join(_literal(t) for t in tokens) or r"\s"


class Compiler:
    """Turns a search tree into a DuckDB predicate; values are inlined as literals.

    ``columns`` maps field names to their columns in the index store; a field with
    no column of its own is looked up in the ``extra`` map (NULL if absent).

    ``candidates``, what the token filter said of the search's words, lets a word
    skip the fields whose lane holds none of its tokens; pass it only when the
    filter covers every row (see ``tokens``).  With ``db`` as well, a word that
    only a few blocks may hold is looked up right away, and compiles to the row
    ids that hold it.
    """

    def __init__(
        self,
        config: IndexConfig,
        columns: dict[str, str],
        candidates: Candidates | None = None,
        logs: Source | None = None,
    ) -> None:
        self.config = config
        self.columns = columns
        self.candidates = candidates
        self.logs = logs
        # the rows a rare word was found in, by node: ``required_rows`` reads them
        self._hits: dict[int, list[int]] = {}

    def required_rows(self, node: Node) -> list[int] | None:
        """After ``compile(node)``: the row ids every match must be among (those a
        rare word of the search was looked up in, when every match needs the
        word: the search is the word, or an ``and`` of it), or None."""
        terms = node.children if isinstance(node, And) else (node,)
        found = [self._hits[id(t)] for t in terms if id(t) in self._hits]
        return min(found, key=len) if found else None

    def compile(self, node: Node) -> str:
        if isinstance(node, All):
            return "TRUE"
        if isinstance(node, Not):
            # a log without the field (NULL) is no match, so "not" keeps it; coalesce
            # only here: around plain terms it keeps DuckDB from filtering in the scan
            return f"NOT coalesce({self.compile(node.child)}, FALSE)"
        if isinstance(node, And):
            return "(" + " AND ".join(self.compile(c) for c in node.children) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.compile(c) for c in node.children) + ")"
        if isinstance(node, Exists):
            return f"({self.column(node.field)} IS NOT NULL)"
        if isinstance(node, Compare):
            return f"({self.number(node.field)} {node.op} {node.value!r})"
        if isinstance(node, Range):
            value = self.number(node.field)
            low = ">=" if node.low_inclusive else ">"
            high = "<=" if node.high_inclusive else "<"
            return f"({value} {low} {node.low!r} AND {value} {high} {node.high!r})"
        return self.text(node)

    def number(self, field: str) -> str:
        return f"TRY_CAST({self.column(field)} AS DOUBLE)"

    def column(self, field: str) -> str:
        """The SQL expression of a field's value (NULL where a log lacks it)."""
        return field_expression(field, self.columns, self.config)

    def text(self, node: Text) -> str:
        tokens, case_sensitive = search_rules(self.config, node.field)
        sep = _separators(tokens)
        words = [w if case_sensitive else fold(w) for w in node.words]
        body = f"[{sep}]+".join(_literal(w) for w in words)
        pattern = sql_string(f"(^|[{sep}]){body}" + ("" if node.prefix else f"($|[{sep}])"))
        needed = _text_tokens(node, self.config, self.columns)
        # (value, the blocks its lane may hold the word in: None for unknown)
        targets: list[tuple[str, set[int] | None]]
        if node.field is None:  # full text: any field's value
            fields = [(f'"{col}"', name) for name, col in self.columns.items()]
        else:
            fields = [(self.column(node.field), node.field)]
        lanes = [(target, self._lane_blocks(field, needed)) for target, field in fields]
        # the word is rare when few blocks hold it in the lanes of its fields
        rare = self.candidates is not None and all(b is not None for _, b in lanes)
        if rare and self.candidates is not None:
            rare = self.candidates.rare(sum(len(b or ()) for _, b in lanes))
        targets = [(target, self._within_candidates(b)) for target, b in lanes if b != set()]
        if node.field is None and len(self.columns) >= MAX_COLUMNS:
            # fields beyond the columns are in the overflow map (never otherwise)
            targets.append(("array_to_string(map_values(extra), chr(10))", None))
            rare = False
        if not targets:
            return "FALSE"
        exact = node.field is not None and not node.prefix and len(words) == 1
        first = words[0]
        caseless = case_sensitive or first == first.upper()  # no letters
        matches: list[tuple[str, set[int] | None]] = []
        for target, blocks in targets:
            # a cheap substring test first (no lower-casing unless needed); only the
            # rows that pass it get lower-cased and checked for token boundaries
            if caseless:
                prefilter = f"contains({target}, {sql_string(first)})"
            else:
                prefilter = f"{target} ILIKE {sql_string('%' + _like(first) + '%')} ESCAPE '!'"
            value = target if case_sensitive else f"lower({target})"
            token = f"({prefilter} AND regexp_matches({value}, {pattern}))"
            if exact:  # "status: 500": the whole value is the word, most often
                # (a word without letters equals the value exactly when it equals
                # the value lower-cased: no need to lower-case every value)
                whole = target if caseless else value
                token = f"({whole} = {sql_string(first)} OR {token})"
            matches.append((token, blocks))
        filtered = self.candidates is not None and self.candidates.blocks is not None
        if filtered and rare and self.logs is not None:
            # few blocks may hold the word: find its rows now, one scan per field in
            # the blocks where that field's lane holds it (no column is decoded
            # anywhere else), and hand the outer query their row ids; a common word
            # beside a rare one is left to the query, which reads the rare one's
            # blocks only
            found: set[int] = set()
            for token, blocks in matches:  # a scan each: each reads one field's blocks
                within = blocks or set()
                statement = self.logs.statement(
                    f"SELECT DISTINCT {ROWID} FROM {LOGS} WHERE {_within(within)} AND {token} "
                    f"LIMIT {_MAX_HITS + 1}",
                    blocks=within,
                )
                found.update(int(r) for (r,) in self.logs.db.execute(statement).fetchall())
                if len(found) > _MAX_HITS:
                    break
            hits = sorted(found)
            if len(hits) <= _MAX_HITS:
                self._hits[id(node)] = hits
                if not hits:
                    return "FALSE"
                listed = ", ".join(str(r) for r in hits)  # (sorted)
                return f"({ROWID} IN (SELECT unnest([{listed}]::BIGINT[])))"
        matched = []
        for token, blocks in matches:
            if blocks is not None and len(blocks) <= _MAX_LISTED_BLOCKS:
                # only where the field's lane holds the word: cheap integer tests
                # spare the string tests on every other candidate block
                token = f"({_within(blocks)} AND {token})"
            matched.append(token)
        return "(" + " OR ".join(matched) + ")"

    def _lane_blocks(self, field: str, needed: Need | None) -> set[int] | None:
        """The blocks where ``field`` may hold the word (None: unknown, any)."""
        if self.candidates is None or not isinstance(needed, Tokens):
            return None
        return self.candidates.lane_blocks(
            lane_field(field, self.config, self.columns), needed.tokens
        )

    def _within_candidates(self, blocks: set[int] | None) -> set[int] | None:
        """Rows outside the search's candidate blocks are never kept: no need to
        read a field there."""
        if blocks is None or self.candidates is None or self.candidates.blocks is None:
            return blocks
        return blocks & self.candidates.blocks


def _within(blocks: set[int]) -> str:
    """A condition on ``blk``: one of ``blocks``."""
    listed = ", ".join(str(b) for b in sorted(blocks))
    if len(blocks) <= _MAX_LISTED_BLOCKS:
        return f"blk IN ({listed})"
    return f"blk IN (SELECT unnest([{listed}]::INTEGER[]))"


def lane_field(field: str, config: IndexConfig, columns: dict[str, str]) -> str:
    """The name whose lane holds a field's tokens (see ``tokens.lane``): tags'
    shared name, a json sub-key's json key, else the field itself."""
    if field.startswith("__tag__:"):
        return TAG_LANE_NAME
    if field not in columns:
        parent = config.json_parent(field)
        if parent is not None:
            return parent[0]
    return field


_FOLD = duckdb.connect(":memory:")
_FOLD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4096)
def fold(word: str) -> str:
    """``word`` lowercased exactly as DuckDB's ``lower`` lowercases the values it is
    compared with (Python differs on some letters: İ, final sigma)."""
    if word.isascii():
        return word.lower()
    with _FOLD_LOCK:
        row = _FOLD.execute("SELECT lower(?)", [word]).fetchone()
    return str(row[0]) if row else word.lower()


def search_rules(config: IndexConfig, field: str | None) -> tuple[tuple[str, ...], bool]:
    """The separators and case rule of full text (``field`` None) or of a field."""
    if field is None:
        if config.line_tokens is None:
            raise ServiceError(
                ErrorCode.INVALID_QUERY,
                "full-text search needs a line index; search a field (key: value) or add "
                '"line" to the index configuration',
            )
        return config.line_tokens, config.line_case_sensitive
    key: KeyConfig | None = config.key(field)
    if key is None:
        return DEFAULT_TOKENS, False
    return key.tokens, key.case_sensitive


def required_tokens(node: Node, config: IndexConfig, columns: dict[str, str]) -> Need | None:
    """What the token prefilter may demand of a matching row's block, or None for
    nothing (see ``tokens``): the tokens of words and phrases, all of them under
    AND, one alternative's under OR; nothing from NOT, prefixes, comparisons, or
    words whose configured separators do not all end tokens."""
    if isinstance(node, Text):
        return _text_tokens(node, config, columns)
    if isinstance(node, And):
        needs = [
            n for n in (required_tokens(c, config, columns) for c in node.children) if n is not None
        ]
        if not needs:
            return None
        return needs[0] if len(needs) == 1 else AllOf(tuple(needs))
    if isinstance(node, Or):
        alternatives = [required_tokens(c, config, columns) for c in node.children]
        if any(n is None for n in alternatives):
            return None
        return AnyOf(tuple(n for n in alternatives if n is not None))
    return None


def _text_tokens(node: Text, config: IndexConfig, columns: dict[str, str]) -> Need | None:
    separators, case_sensitive = search_rules(config, node.field)
    if not separators_split_tokens(separators):
        return None
    words = [w if case_sensitive else fold(w) for w in node.words]
    tokens = [t for w in words for t in word_tokens(w)]
    if node.prefix and tokens:
        tokens.pop()  # its match may continue past the word
    if not tokens:
        return None
    if node.field is not None:
        lanes = frozenset({lane(lane_field(node.field, config, columns))})
    elif len(columns) >= MAX_COLUMNS:  # fields beyond the columns: any lane
        lanes = frozenset(range(LANES))
    else:
        lanes = frozenset(lane(name) for name in columns)
    return Tokens(frozenset(tokens), lanes)


def field_expression(field: str, columns: dict[str, str], config: IndexConfig | None = None) -> str:
    """The SQL expression of a field's value in the ``logs`` table: a column, a tag,
    a member of a json key's value, or an entry of the overflow map."""
    if field == "__topic__":
        return "topic"
    if field == "__source__":
        return "source"
    if field.startswith("__tag__:"):
        return f"tags[{sql_string(field[len('__tag__:') :])}]"
    column = columns.get(field)
    if column:
        return f'"{column}"'
    parent = config.json_parent(field) if config is not None else None
    if parent is not None:
        outer, path = parent
        steps = "".join(f'."{step}"' for step in path.replace('"', "").split("."))
        value = field_expression(outer, columns)
        document = f"CASE WHEN json_valid({value}) THEN {value} END"  # else NULL, no error
        return f"json_extract_string({document}, {sql_string('$' + steps)})"
    return f"extra[{sql_string(field)}]"
