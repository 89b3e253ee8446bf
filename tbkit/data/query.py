"""The record filter language shared by the TensorBoard plugin and ``tbkit export --where``.

``parse("loss > 2 and opt.lr < 1e-3")`` turns user text into a small tree (:attr:`Query.tree`)
and compiles it once into nested Python closures: values are bound as data, nothing is ever
passed to ``eval``, spliced into code or into SQL. The grammar, the meaning of every operator
and the limits are in ``docs/query.md``. Imports no TensorFlow.
"""

from __future__ import annotations

import difflib
import json
import numbers
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from tbkit.data.errors import TbkitTypeError, TbkitValueError, expected
from tbkit.data.levels import LEVELS, RANK
from tbkit.data.metadata import BUILTIN_FIELDS as _BUILTINS
from tbkit.data.rows import NON_FINITE, flat, flatten  # noqa: F401 (tbkit.query.flatten)

MAX_LENGTH = 4096  #: longest query text, in characters
MAX_DEPTH = 64  #: deepest nesting of parentheses and ``not``
BUILTIN_FIELDS = frozenset(_BUILTINS)  #: fields every row has

#: The comparison operators, shared with the plugin's vectorised evaluation.
OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}  # fmt: skip
_RESERVED = {"and", "or", "not", "exists", "contains", "matches"}
_LITERALS = {"true": True, "false": False, "null": None, "nan": float("nan"),
             "infinity": float("inf"), "-infinity": float("-inf")}  # fmt: skip
_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<num>-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<ninf>(?i:-infinity)(?!\w))|(?P<op>[=!<>]=|[<>])|(?P<paren>[()])"
)
_WORDS = _RESERVED | _LITERALS.keys()
_WORD = re.compile(r"[^\W\d]\w*")  # the first segment of a bare field name
_SEGMENT = re.compile(r"\w+")  # later segments may start with a digit: layers.0.bias
_NUMBER_TAIL = re.compile(r"[\w.]*")
_HINTS = {"=": " (use '==')", "!": " (use 'not' or '!=')", "&": " (use 'and')",
          "|": " (use 'or')", "'": " (strings are double-quoted)"}  # fmt: skip
_ESCAPES = {'"': {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}, "`": {"`": "`", "\\": "\\"}}


class QueryError(TbkitValueError):
    """A query that does not parse or names an unknown field; ``position`` is a 0-based offset."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at {position}")
        self.message, self.position = message, position

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # picklable across processes
        return QueryError, (self.message, self.position)


# The tree. A translator (e.g. to a store's own filter) can walk it; evaluation does not.
@dataclass(frozen=True)
class Compare:
    """``field op value``; for ``level`` the value is a level name compared by rank."""

    field: str
    op: str
    value: Any
    position: int


@dataclass(frozen=True)
class Contains:
    """``field contains "text"``: case-folded substring of the value's text."""

    field: str
    text: str
    position: int


@dataclass(frozen=True)
class Exists:
    """``exists field``: the row has the field (its value may be null)."""

    field: str
    position: int


@dataclass(frozen=True)
class Not:
    arg: Node


@dataclass(frozen=True)
class And:
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    args: tuple[Node, ...]


Node = Compare | Contains | Exists | Not | And | Or
Predicate = Callable[[Mapping[str, Any]], bool]


class _Tok(NamedTuple):
    kind: str  # name, word (a reserved word), num, str, op, (, ), end
    value: Any
    pos: int
    src: str

    def shown(self) -> str:
        if self.kind == "end":
            return "end of query"
        src = self.src if len(self.src) <= 24 else self.src[:20] + "…"
        return src if self.kind == "str" else repr(src)


def _quoted(text: str, start: int) -> tuple[str, int]:
    """Scan the string or backquoted name opening at ``start``; return (value, end)."""
    quote, out, i = text[start], [], start + 1
    while i < len(text) and text[i] != quote:
        if text[i] == "\\" and i + 1 < len(text):
            if text[i + 1] not in _ESCAPES[quote]:
                raise QueryError(f"unknown escape '{text[i : i + 2]}'", i)
            out.append(_ESCAPES[quote][text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    if i >= len(text):
        raise QueryError("unterminated " + ("string" if quote == '"' else "`name`"), start)
    return "".join(out), i + 1


def _name(text: str, start: int) -> tuple[_Tok, int]:
    """Scan a field name: segments (bare words or backquoted) joined by dots."""
    parts, pos, bare = [], start, True
    while True:
        if text[pos] == "`":
            part, pos = _quoted(text, pos)
            if not part:
                raise QueryError("empty field name", pos - 2)
            bare = False
        else:
            match = (_SEGMENT if parts else _WORD).match(text, pos)
            part, pos = match.group(), match.end()  # type: ignore[union-attr]
        parts.append(part)
        if text[pos : pos + 1] != "." or not (_SEGMENT.match(text, pos + 1) or
                                              text[pos + 1 : pos + 2] == "`"):  # fmt: skip
            break
        pos += 1
    name, src = ".".join(parts), text[start:pos]
    if bare and len(parts) == 1 and (word := name.lower()) in _WORDS:
        kind = "word" if word in _RESERVED else "num"
        return _Tok(kind, _LITERALS.get(word, word), start, src), pos
    return _Tok("name", name, start, src), pos


def _tokens(text: str) -> list[_Tok]:
    toks, pos = [], 0
    while pos < len(text):
        char, match = text[pos], _TOKEN.match(text, pos)
        if match and match.lastgroup == "num":
            end = match.end()
            if (tail := _NUMBER_TAIL.match(text, end).end()) > end:  # type: ignore[union-attr]
                raise QueryError(f"malformed number {text[pos:tail]!r}", pos)
            src = match.group()
            value = float(src) if any(c in src for c in ".eE") else int(src)
            if value in (float("inf"), float("-inf")):
                raise QueryError(f"number out of range {src!r}", pos)
            toks.append(_Tok("num", value, pos, src))
        elif match and match.lastgroup == "ninf":
            toks.append(_Tok("num", float("-inf"), pos, match.group()))
        elif match and match.lastgroup in ("op", "paren"):
            toks.append(_Tok(match.group() if match.lastgroup == "paren" else "op",
                             match.group(), pos, match.group()))  # fmt: skip
        elif match:  # whitespace
            pass
        elif char == '"':
            value, end = _quoted(text, pos)
            toks.append(_Tok("str", value, pos, text[pos:end]))
            pos = end
            continue
        elif char == "`" or _WORD.match(char):
            tok, pos = _name(text, pos)
            toks.append(tok)
            continue
        else:
            raise QueryError(f"unexpected character {char!r}{_HINTS.get(char, '')}", pos)
        pos = match.end()
    return [*toks, _Tok("end", None, len(text), "")]


class _Parser:
    """Recursive descent over the token list; precedence not > and > or."""

    def __init__(self, text: str):
        self.toks, self.i, self.depth = _tokens(text), 0, 0
        self.positions: dict[str, int] = {}

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += tok.kind != "end"
        return tok

    def at(self, word: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind == "word" and tok.value == word

    def fail(self, what: str, after: _Tok | None, got: _Tok) -> QueryError:
        where = f" after {after.src!r}" if after else ""
        return QueryError(f"expected {what}{where} (got {got.shown()})", got.pos)

    def query(self) -> Node:
        node = self.disjunction(None)
        if (tok := self.next()).kind != "end":
            raise self.fail("'and', 'or' or the end of the query", None, tok)
        return node

    def disjunction(self, after: _Tok | None) -> Node:
        args = [self.conjunction(after)]
        while self.at("or"):
            args.append(self.conjunction(self.next()))
        return args[0] if len(args) == 1 else Or(tuple(args))

    def conjunction(self, after: _Tok | None) -> Node:
        args = [self.condition(after)]
        while self.at("and"):
            args.append(self.condition(self.next()))
        return args[0] if len(args) == 1 else And(tuple(args))

    def condition(self, after: _Tok | None) -> Node:
        tok = self.next()
        if tok.kind == "(" or (tok.kind == "word" and tok.value == "not"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"query nests deeper than {MAX_DEPTH} levels", tok.pos)
            if tok.kind == "(":
                node = self.disjunction(tok)
                if (close := self.next()).kind != ")":
                    raise self.fail("')'", None, close)
            else:
                node = Not(self.condition(tok))
            self.depth -= 1
            return node
        if tok.kind == "word" and tok.value == "exists":
            if (field := self.next()).kind != "name":
                raise self.fail("a field name", tok, field)
            return Exists(self.field(field), field.pos)
        if tok.kind == "name":
            return self.comparison(tok)
        raise self.fail("a condition", after, tok)

    def field(self, tok: _Tok) -> str:
        self.positions.setdefault(tok.value, tok.pos)
        return tok.value

    def comparison(self, field: _Tok) -> Node:
        name, op, lit = self.field(field), self.next(), self.toks[self.i]
        if op.kind == "word" and op.value == "matches":
            raise QueryError("'matches' is not supported (a regular expression can take "
                             "exponential time); use 'contains'", op.pos)  # fmt: skip
        if op.kind == "word" and op.value == "contains":
            if lit.kind != "str":
                raise self.fail("a string", op, lit)
            return Contains(name, self.next().value, field.pos)
        if op.kind != "op":
            raise self.fail("an operator (==, !=, <, <=, >, >=, contains)", field, op)
        if name == "level":
            if lit.kind not in ("str", "name") or lit.value.lower() not in RANK:
                raise self.fail(f"a level ({', '.join(LEVELS)})", op, lit)
            return Compare(name, op.value, self.next().value.lower(), field.pos)
        if lit.kind not in ("num", "str"):
            raise self.fail("a value", op, lit)
        value = self.next().value
        if op.value not in ("==", "!=") and (value is None or isinstance(value, bool)):
            raise QueryError(f"{op.value!r} needs a number or a string (got {lit.src!r})", lit.pos)
        return Compare(name, op.value, value, field.pos)


def _number(value: Any) -> Any:
    """A row value as a number, or None: bools are not numbers, "NaN"-like strings are."""
    if type(value) is int or type(value) is float:  # the common case, fast
        return value
    if isinstance(value, str):
        return NON_FINITE.get(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _compare(node: Compare) -> Predicate:
    name, op, lit, cmp = node.field, node.op, node.value, OPERATORS[node.op]
    if name == "level":
        ok = frozenset(w for w, rank in RANK.items() if cmp(rank, RANK[lit]))
        return lambda row: isinstance(v := row.get(name), str) and (v in ok or v.lower() in ok)
    if lit is None:
        if op == "==":
            return lambda row: name in row and row[name] is None
        return lambda row: row.get(name) is not None
    if isinstance(lit, bool):
        return lambda row: isinstance(v := row.get(name), bool) and cmp(v, lit)
    if isinstance(lit, str):
        return lambda row: isinstance(v := row.get(name), str) and cmp(v, lit)
    if lit != lit:  # NaN equals only NaN; ordering with NaN is false, as in IEEE 754
        if op in ("==", "!="):
            is_nan = op == "=="
            return lambda row: (v := _number(row.get(name))) is not None and (v != v) == is_nan
        return lambda row: False

    def compare_number(row: Mapping[str, Any]) -> bool:
        v = row.get(name)
        if type(v) is not float and type(v) is not int and (v := _number(v)) is None:
            return False
        return cmp(v, lit)

    return compare_number


def _compile(node: Node) -> Predicate:
    if isinstance(node, Compare):
        return _compare(node)
    if isinstance(node, Contains):
        name, needle = node.field, node.text.casefold()
        return lambda row: (v := row.get(name)) is not None and needle in _text(v).casefold()
    if isinstance(node, Exists):
        name = node.field
        return lambda row: name in row
    if isinstance(node, Not):
        arg = _compile(node.arg)
        return lambda row: not arg(row)
    preds, stop = tuple(map(_compile, node.args)), isinstance(node, Or)  # stop at a True in or

    def junction(row: Mapping[str, Any]) -> bool:
        for pred in preds:
            if pred(row) is stop:
                return stop
        return not stop

    return junction


class Query:
    """A parsed, compiled filter. Call it on a flat row, or use :meth:`matches` on a Record."""

    __slots__ = ("text", "tree", "fields", "_positions", "_predicate")

    def __init__(self, text: str, tree: Node, positions: dict[str, int]):
        self.text, self.tree, self._positions = text, tree, positions
        self.fields = frozenset(positions)  #: dotted field names the query references
        self._predicate = _compile(tree)

    def __repr__(self) -> str:
        return f"Query({self.text!r})"

    def __call__(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` (dotted names → values, plus run/tag/step/wall_time/level) matches."""
        return self._predicate(row)

    def matches(self, record: Any) -> bool:
        """Whether a :class:`tbkit.read.Record` matches (its fields are flattened first)."""
        return self._predicate(flat(record))

    def check(self, schema: Iterable[str]) -> None:
        """Raise :class:`QueryError` at the first field that is neither in ``schema`` nor built-in.

        The message suggests a close name (``did you mean 'loss'?``) or, for an object, one of
        its dotted fields.
        """
        known = BUILTIN_FIELDS | set(schema)
        for name, pos in sorted(self._positions.items(), key=lambda item: item[1]):
            if name not in known:
                inner = sorted(k for k in known if k.startswith(name + "."))
                close = inner[:1] or difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise QueryError(f"unknown field {name!r}{hint}", pos)


def parse(text: str) -> Query:
    """Parse and compile a filter such as ``loss > 2 and message contains "nan"``.

    Raises:
        QueryError: a syntax error, or the text is longer than :data:`MAX_LENGTH` or nests
            deeper than :data:`MAX_DEPTH`; ``position`` says where.
        TbkitTypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TbkitTypeError(expected("text", "a str", text))
    if len(text) > MAX_LENGTH:
        raise QueryError(f"query is {len(text)} characters long; the limit is {MAX_LENGTH}",
                         MAX_LENGTH)  # fmt: skip
    parser = _Parser(text)
    return Query(text, parser.query(), parser.positions)
