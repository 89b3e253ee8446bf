"""The filter language: parse → evaluate, every error text and position, and a reference twin."""

from __future__ import annotations

import math
import operator
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tbkit import query
from tbkit.data.errors import TbkitTypeError, TbkitValueError
from tbkit.data.levels import LEVELS
from tbkit.data.rows import flatten
from tbkit.query import QueryError, parse
from tbkit.read import Record

OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}  # fmt: skip
ROW = {
    "run": "train", "tag": "log", "step": 120, "wall_time": 1.7e9, "level": "warning",
    "loss": 0.25, "acc": "NaN", "grad": "Infinity", "low": "-Infinity", "nan_float": math.nan,
    "name": "Straße", "greek": "ΣΊΣΥΦΟΣ", "msg": 'Loss is NaN at "step" 3', "flag": True,
    "none": None, "opt.lr": 1e-3, "opt.beta": 0.9, "weird key": "w", "a`b": 1,
    "big": 2**63 - 1, "items": [1, "two"], "text_num": "3", "layers.0.bias": 0.5, "zero": 0,
}  # fmt: skip

# fmt: off
CASES = [
    # numbers, with ints and floats compared exactly
    ("loss > 0.2", True), ("loss >= 0.25", True), ("loss < 0.25", False), ("loss <= 2.5e-1", True),
    ("loss == 0.25", True), ("loss != 0.25", False), ("step == 120.0", True), ("step > -2", True),
    ("big == 9223372036854775807", True), ("big == 9223372036854775806", False),
    ("opt.lr < 1e-2", True), ("opt.lr == .001", True), ("layers.0.bias == 0.5", True),
    ("wall_time > 1e9", True),
    # non-finite strings are numbers in numeric comparisons; NaN equals only NaN
    ("acc == NaN", True), ("acc != NaN", False), ("acc > 0", False), ("acc < 0", False),
    ("acc != 0", True), ("acc >= NaN", False), ("nan_float == nan", True), ("loss == NaN", False),
    ("loss != NaN", True), ("grad == Infinity", True), ("grad > 1e308", True),
    ("low == -Infinity", True), ("low < -1e308", True), ("low == -INFINITY", True),
    ('acc == "NaN"', True), ('grad == "infinity"', False),
    # no coercion: numbers never equal strings, bools or lists
    ("text_num == 3", False), ("text_num != 3", False), ('text_num == "3"', True),
    ("flag == 1", False), ("zero == false", False), ("items == 1", False), ("name > 1", False),
    # strings compare by code point, case-sensitively
    ('run == "train"', True), ('run != "Train"', True), ('tag < "m"', True),
    ('tag >= "log"', True), ('msg == "Loss is NaN at \\"step\\" 3"', True),
    # true/false/null (any case)
    ("flag == true", True), ("flag != false", True), ("flag == TRUE", True),
    ("none == null", True), ("none != null", False), ("loss != null", True),
    ("loss == null", False),
    # contains: case-folded substring of the value's text
    ('msg contains "nan"', True), ('msg contains "NAN AT"', True),
    ('msg contains "inf"', False),
    ('name contains "STRASSE"', True), ('greek contains "σίσυφος"', True),
    ('loss contains "0.2"', True), ('flag contains "TRUE"', True),
    ('items contains "two"', True),
    ('none contains "null"', False), ('name contains ""', True),
    ('level contains "WARN"', True),
    # missing fields: every comparison is false, `not` of it is true
    ("missing == 1", False), ("missing != 1", False), ("missing == null", False),
    ("missing != null", False), ('missing contains ""', False), ("not missing == 1", True),
    ("exists missing", False), ("exists none", True), ("exists opt.lr", True),
    ("exists opt", False),
    # level compares by rank, with a bare level word or a string in any case
    ("level >= warning", True), ("level > warning", False), ('level >= "INFO"', True),
    ("level == Warning", True), ("level < error", True), ("level != debug", True),
    # names: dotted, backquoted, segments mixed
    ('`weird key` == "w"', True), ("`opt.lr` == 0.001", True), ("opt.`lr` == 0.001", True),
    ("`a\\`b` == 1", True),
    # logic and precedence: not > and > or
    ("loss > 1 or step == 120 and flag == true", True),
    ("(loss > 1 or step == 120) and flag == false", False),
    ("loss > 1 or step == 120 and flag == false", False),
    ("not loss > 1 and flag == true", True), ("not (loss > 1 or flag == true)", False),
    ("not not flag == true", True), ("NOT flag == true OR loss > 0 AND step == 120", True),
    ("((((loss > 0))))", True),
]
# fmt: on


@pytest.mark.parametrize("text, expected", CASES)
def test_parse_then_evaluate(text, expected):
    assert parse(text)(ROW) is expected


def test_fields_and_tree():
    q = parse('loss > 2 and (opt.lr < 1e-3 or `weird key` contains "x") and exists none')
    assert q.fields == {"loss", "opt.lr", "weird key", "none"}
    assert q.tree == query.And((
        query.Compare("loss", ">", 2, 0),
        query.Or((query.Compare("opt.lr", "<", 1e-3, 14), query.Contains("weird key", "x", 31))),
        query.Exists("none", 68),
    ))  # fmt: skip
    assert repr(q) == f"Query({q.text!r})" and q.text.startswith("loss > 2 and (")
    assert parse('level >= "WARNING"').tree == query.Compare("level", ">=", "warning", 0)


def test_level_ordering_on_every_pair():
    for i, row_level in enumerate(LEVELS):
        for j, word in enumerate(LEVELS):
            for op, cmp in OPS.items():
                assert parse(f"level {op} {word}")({"level": row_level}) is cmp(i, j)
    assert parse("level >= debug")({"level": "INFO"}) is True
    assert parse("level >= debug")({"level": "verbose"}) is False  # not a level: never matches
    assert parse("level >= debug")({"level": 3}) is False
    assert parse("level >= debug")({}) is False


# fmt: off
ERRORS = [
    ("", "expected a condition (got end of query)", 0),
    ("   ", "expected a condition (got end of query)", 3),
    ("loss >", "expected a value after '>' (got end of query)", 6),
    ("loss > and", "expected a value after '>' (got 'and')", 7),
    ("x == y", "expected a value after '==' (got 'y')", 5),
    ("loss = 1", "unexpected character '=' (use '==')", 5),
    ("a == 1 && b == 2", "unexpected character '&' (use 'and')", 7),
    ("a == 1 || b == 2", "unexpected character '|' (use 'or')", 7),
    ("!a", "unexpected character '!' (use 'not' or '!=')", 0),
    ("a == 'x'", "unexpected character \"'\" (strings are double-quoted)", 5),
    ("x - 1", "unexpected character '-'", 2),
    ("opt. lr == 1", "unexpected character '.'", 3),
    ("a == 1\x00", "unexpected character '\\x00'", 6),
    ('msg == "abc', "unterminated string", 7),
    ('msg == "abc\\', "unterminated string", 7),
    ('msg == "a\\qb"', "unknown escape '\\q'", 9),
    ("`a == 1", "unterminated `name`", 0),
    ("`a\\\"` == 1", "unknown escape '\\\"'", 2),
    ("`` == 1", "empty field name", 0),
    ("x == 1.2.3", "malformed number '1.2.3'", 5),
    ("x == 12abc", "malformed number '12abc'", 5),
    ("x == 1e999", "number out of range '1e999'", 5),
    ("(a == 1", "expected ')' (got end of query)", 7),
    ("a == 1)", "expected 'and', 'or' or the end of the query (got ')')", 6),
    ("a == 1 b == 2", "expected 'and', 'or' or the end of the query (got 'b')", 7),
    ("a == 1 and", "expected a condition after 'and' (got end of query)", 10),
    ("a == 1 or or", "expected a condition after 'or' (got 'or')", 10),
    ("not", "expected a condition after 'not' (got end of query)", 3),
    ("()", "expected a condition after '(' (got ')')", 1),
    ("1 == a", "expected a condition (got '1')", 0),
    ('"a" == a', 'expected a condition (got "a")', 0),
    ("a", "expected an operator (==, !=, <, <=, >, >=, contains) after 'a' (got end of query)", 1),
    ("`odd` 1", "expected an operator (==, !=, <, <=, >, >=, contains) after '`odd`' (got '1')", 6),
    ("exists 3", "expected a field name after 'exists' (got '3')", 7),
    ("msg contains 3", "expected a string after 'contains' (got '3')", 13),
    ('msg matches "a+"', "'matches' is not supported (a regular expression can take exponential "
                        "time); use 'contains'", 4),
    ("x < null", "'<' needs a number or a string (got 'null')", 4),
    ("flag >= False", "'>=' needs a number or a string (got 'False')", 8),
    ("level >= warn", "expected a level (debug, info, warning, error) after '>=' (got 'warn')", 9),
    ("level == 3", "expected a level (debug, info, warning, error) after '==' (got '3')", 9),
    ('x == 1 "' + "y" * 30 + '"',
     "expected 'and', 'or' or the end of the query (got \"yyyyyyyyyyyyyyyyyyy…)", 7),
    ("(" * 65 + "a == 1" + ")" * 65, "query nests deeper than 64 levels", 64),
    ("not " * 65 + "a == 1", "query nests deeper than 64 levels", 256),
    ("a == 1 or " * 410 + "a == 1", "query is 4106 characters long; the limit is 4096", 4096),
]
# fmt: on


@pytest.mark.parametrize("text, message, position", ERRORS)
def test_syntax_errors_name_what_was_expected_and_where(text, message, position):
    with pytest.raises(QueryError, match="^" + re.escape(f"{message} at {position}") + "$") as e:
        parse(text)
    assert (e.value.message, e.value.position) == (message, position)
    assert isinstance(e.value, TbkitValueError)


def test_limits_are_inclusive():
    assert parse("(" * 64 + "a == 1" + ")" * 64)({"a": 1}) is True
    assert parse("not " * 64 + "a == 1")({"a": 1}) is True
    text = "a == 1 or " * 409 + "a == 1"
    assert len(text) <= query.MAX_LENGTH and parse(text)({"a": 1}) is True


def test_a_query_must_be_text():
    with pytest.raises(TbkitTypeError, match=re.escape(
            "'text' must be a str (got b'a == 1' that is a <class 'bytes'>).")):  # fmt: skip
        parse(b"a == 1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, schema, message, position",
    [
        ("los > 1", ["loss"], "unknown field 'los' (did you mean 'loss'?)", 0),
        ("Loss > 1", ["loss", "acc"], "unknown field 'Loss' (did you mean 'loss'?)", 0),
        ("a == 1 and zzz == 2", ["a"], "unknown field 'zzz'", 11),
        ("exists opt", ["opt.lr", "opt.beta"], "unknown field 'opt' (did you mean 'opt.beta'?)", 7),
        ("stp > 1 and b == 1", ["a"], "unknown field 'stp' (did you mean 'step'?)", 0),
        ("`a b` == 1 or x > 0", ["x"], "unknown field 'a b'", 0),
    ],
)
def test_check_names_the_first_unknown_field(text, schema, message, position):
    with pytest.raises(QueryError, match="^" + re.escape(f"{message} at {position}") + "$"):
        parse(text).check(schema)


def test_check_accepts_known_and_builtin_fields():
    parse("step > 1 and level >= info and run == \"x\" and tag == \"t\" and wall_time > 0 "
          "and opt.lr < 1").check(iter(["opt.lr"]))  # fmt: skip


def test_flatten():
    fields = {"loss": 1.5, "opt": {"lr": 0.1, "betas": {"b1": 0.9}}, "hist": [1, 2], "e": {}}
    assert flatten(fields) == {"loss": 1.5, "opt.lr": 0.1, "opt.betas.b1": 0.9,
                               "hist": [1, 2], "e": {}}  # fmt: skip
    assert flatten({"x": 1}, prefix="p.") == {"p.x": 1}


def test_matches_real_records():
    records = [
        Record("train", "log", 0, 10.0, "info", {"loss": 2.5, "opt": {"lr": 0.1}}),
        Record("train", "log", 100, 11.0, "warning", {"loss": "NaN", "opt": {"lr": 0.01}}),
        Record("validation", "log", 100, 12.0, "debug", {"loss": 0.5, "msg": "ÜBER"}),
        Record("train", "grads", 200, 13.0, "error", {"norm": "Infinity"}),
    ]

    def steps(text):
        q = parse(text)
        return [(r.run, r.step) for r in records if q.matches(r)]

    assert steps("loss == NaN or norm > 1e30") == [("train", 100), ("train", 200)]
    assert steps("opt.lr < 0.05") == [("train", 100)]
    assert steps('level >= warning and tag == "log"') == [("train", 100)]
    assert steps('run == "validation" and msg contains "über"') == [("validation", 100)]
    assert steps("not exists opt.lr and step >= 100") == [("validation", 100), ("train", 200)]
    assert steps("wall_time > 11.5 and loss > 0") == [("validation", 100)]


def test_numpy_scalars_compare_as_numbers():
    np = pytest.importorskip("numpy")
    row = {"x": np.float64(3.0), "n": np.int64(2**62 + 1), "f": np.float32("nan"), "b": np.bool_(1)}
    assert parse("x > 2 and n == 4611686018427387905 and f == NaN")(row) is True
    assert parse("x > 2 or b == 1")({"x": np.float32(1), "b": np.bool_(1)}) is False
    assert parse('n contains "4611"')(row) is True


def test_query_errors_survive_pickling():
    error = pickle.loads(pickle.dumps(QueryError("expected a value after '>'", 7)))
    assert (str(error), error.message, error.position) == (
        "expected a value after '>' at 7",
        "expected a value after '>'",
        7,
    )


def test_the_query_module_loads_no_tensorflow():
    code = "import sys, tbkit.query; print([m for m in sys.modules if m.startswith('tensorflow')])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
        check=True,
    )
    assert done.stdout == "[]\n"


# --- property tests ---------------------------------------------------------------------------

QUERYISH = st.lists(
    st.sampled_from(
        [
            *'ab.`"\\()<>=! -1e5NaInfxotsdcum ',
            "and ",
            "or ",
            "not ",
            "exists ",
            "contains ",
            "level",
            "warning",
            "null",
            "true",
            " a == 1 ",
            ' b contains "x" ',
            "(",
            ")",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), QUERYISH))
def test_any_text_parses_or_raises_a_query_error(text):
    try:
        q = parse(text)
    except QueryError as e:
        assert 0 <= e.position <= len(text)
        return
    assert q(ROW) in (True, False) and q({}) in (True, False)
    try:
        q.check(["loss"])
    except QueryError as e:
        assert 0 <= e.position < len(text)


# A reference evaluator, written straight from docs/query.md, over trees the test generates.
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
ROW_NAMES = {"a": "a", "b": "b", "opt.lr": "opt.lr", "`odd key`": "odd key", "missing": "missing"}


def as_number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return v
    return NON_FINITE.get(v) if isinstance(v, str) else None


def text_of(v):
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return "[" + ",".join(text_of(x) for x in v) + "]"
    return repr(v)


def reference(node, row):
    kind = node[0]
    if kind in ("and", "or"):
        results = [reference(arg, row) for arg in node[1]]
        return all(results) if kind == "and" else any(results)
    if kind == "not":
        return not reference(node[1], row)
    name = ROW_NAMES.get(node[1], node[1])
    if kind == "exists":
        return name in row
    if name not in row:
        return False
    v = row[name]
    if kind == "contains":
        return v is not None and node[2].casefold() in text_of(v).casefold()
    op, lit = node[2], node[3]
    if name == "level":
        return v in LEVELS and OPS[op](LEVELS.index(v), LEVELS.index(lit.lower()))
    if lit is None:
        return (v is None) == (op == "==")
    if isinstance(lit, bool):
        return isinstance(v, bool) and OPS[op](v, lit)
    if isinstance(lit, str):
        return isinstance(v, str) and OPS[op](v, lit)
    if (x := as_number(v)) is None:
        return False
    if math.isnan(x) or math.isnan(lit):
        both = math.isnan(x) and math.isnan(lit)
        return {"==": both, "!=": not both}.get(op, False)
    return OPS[op](x, lit)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_literal(lit):
    if lit is None or isinstance(lit, bool):
        return {None: "null", True: "true", False: "FALSE"}[lit]
    if isinstance(lit, float) and not math.isfinite(lit):
        return text_of(lit)
    return quote(lit) if isinstance(lit, str) else repr(lit)


def render(node, parens):
    kind = node[0]
    if kind in ("and", "or"):
        parts = [render(a, parens) for a in node[1]]
        parts = [f"({p})" if (parens or (kind == "and" and a[0] == "or")) and a[0] in ("and", "or")
                 else p for p, a in zip(parts, node[1], strict=True)]  # fmt: skip
        return f" {kind} ".join(parts)
    if kind == "not":
        inner = render(node[1], parens)
        return f"not ({inner})" if node[1][0] in ("and", "or") else f"not {inner}"
    if kind == "exists":
        return f"exists {node[1]}"
    if kind == "contains":
        return f"{node[1]} contains {quote(node[2])}"
    lit = node[3]
    if node[1] == "level":
        return f"level {node[2]} {lit}"
    return f"{node[1]} {node[2]} {render_literal(lit)}"


WORDS = st.sampled_from(["", "abc", "ABC", "Straße", "STRASSE", "NaN", "Infinity", "-Infinity",
                         'q"uo\\te', "1", "[1"])  # fmt: skip
NUMBERS = st.one_of(st.integers(-(10**20), 10**20), st.floats(), st.sampled_from([0.5, -0.0]))
FIELDS = st.sampled_from(list(ROW_NAMES))
LEAVES = st.one_of(
    st.tuples(st.just("cmp"), FIELDS, st.sampled_from(list(OPS)), st.one_of(NUMBERS, WORDS)),
    st.tuples(
        st.just("cmp"), FIELDS, st.sampled_from(["==", "!="]), st.sampled_from([None, True, False])
    ),
    st.tuples(
        st.just("cmp"),
        st.just("level"),
        st.sampled_from(list(OPS)),
        st.sampled_from(["debug", "info", '"Warning"', "ERROR"]),
    ),
    st.tuples(st.just("contains"), FIELDS, st.one_of(WORDS, st.text(max_size=3))),
    st.tuples(st.just("exists"), FIELDS),
)
TREES = st.recursive(LEAVES, lambda kids: st.one_of(
    st.tuples(st.just("and"), st.lists(kids, min_size=2, max_size=3)),
    st.tuples(st.just("or"), st.lists(kids, min_size=2, max_size=3)),
    st.tuples(st.just("not"), kids),
), max_leaves=8)  # fmt: skip
VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, WORDS, st.text(max_size=4),
                   st.lists(st.integers(-2, 2), max_size=2))  # fmt: skip
ROWS = st.fixed_dictionaries(
    {},
    optional={
        "a": VALUES,
        "b": VALUES,
        "opt.lr": VALUES,
        "odd key": VALUES,
        "level": st.sampled_from([*LEVELS, "bogus", 3]),
    },
)


def normalise(node):
    """The test trees keep level words as typed; the reference compares them unquoted."""
    if node[0] == "cmp" and node[1] == "level":
        return ("cmp", "level", node[2], node[3].strip('"'))
    if node[0] in ("and", "or"):
        return (node[0], [normalise(a) for a in node[1]])
    return ("not", normalise(node[1])) if node[0] == "not" else node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES, st.lists(ROWS, min_size=1, max_size=5), st.booleans())
def test_generated_queries_agree_with_the_reference(tree, rows, parens):
    q = parse(render(tree, parens))
    for row in rows:
        assert q(row) is reference(normalise(tree), row), (render(tree, parens), row)
