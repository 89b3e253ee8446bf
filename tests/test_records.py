"""tbkit.records: records → strict JSON in the graph, checked against the pure twin.

Every graph here is a real ``tf.function``. The property tests feed a few fixed record shapes
through functions with an ``input_signature`` (one trace each) and let hypothesis vary values.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import struct
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tbreader import summaries

import tbkit
from tbkit.data import markers
from tbkit.data.errors import TbkitTypeError, TbkitValueError
from tbkit.summary import jsonenc, records

FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def exactly(message: str) -> str:
    """A pytest.raises pattern matching the whole message (``match`` alone searches)."""
    return f"^{re.escape(message)}$"


def strict_loads(text: str):
    """json.loads that refuses NaN/Infinity literals (RFC 8259 has none)."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def assert_same(a, b, path="$"):
    """Equal JSON values, same key order, floats equal to the bit (so -0.0 != 0.0)."""
    assert type(a) is type(b), (path, a, b)
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), (path, a, b)
    else:
        assert a == b, (path, a, b)


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def assert_round_trips(parsed, original: np.ndarray):
    """A parsed float (or float list) gives back the original bits; NaN comes back as NaN."""
    values = parsed if isinstance(parsed, list) else [parsed]
    assert all(isinstance(v, float) or v in _NON_FINITE for v in values), values
    back = np.array([_NON_FINITE.get(v, v) for v in values]).astype(original.dtype)
    want = np.atleast_1d(original)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(back), nan)
    assert np.array_equal(
        back[~nan].view(f"u{want.itemsize}"), want[~nan].view(f"u{want.itemsize}")
    )


# -- value strategies ---------------------------------------------------------------------

SPECIAL_TEXT = '"\\\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f é€😀\u2028\ufffd\U0010ffff'
utf8_chars = st.characters(exclude_categories=["Cs"])  # lone surrogates are not UTF-8
texts = st.text(st.one_of(st.sampled_from(SPECIAL_TEXT), utf8_chars), max_size=12)
float32s = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda b: np.uint32(b).view(np.float32)),  # any bits
    st.floats(width=32).map(np.float32),
    st.sampled_from([0.0, -0.0, 1.0, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38,
                     -3.4028235e38, 1e9, 16777216.0, np.inf, -np.inf, np.nan]).map(np.float32),
)  # fmt: skip
float64s = st.one_of(
    st.integers(0, 2**64 - 1).map(lambda b: np.uint64(b).view(np.float64)),
    st.floats().map(np.float64),
    st.floats(-3e-308, 3e-308).map(np.float64),  # subnormals and their neighbours
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072009e-308, 1.7976931348623157e308,
                     1e16, 1e17, 1e22, np.inf, -np.inf, np.nan]).map(np.float64),
)  # fmt: skip
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1]))


@dataclasses.dataclass
class Inner:
    count: object
    name: object


Pair = collections.namedtuple("Pair", ["first", "second"])

# One fixed record shape: (name, TensorSpec, strategy of numpy values).
FIELDS = [
    ("f32", tf.TensorSpec([], tf.float32), float32s),
    ("f64", tf.TensorSpec([], tf.float64), float64s),
    ("f16", tf.TensorSpec([], tf.float16), st.integers(0, 2**16 - 1).map(
        lambda b: np.uint16(b).view(np.float16))),
    ("i64", tf.TensorSpec([], tf.int64), int64s.map(np.int64)),
    ("i8", tf.TensorSpec([], tf.int8), st.integers(-128, 127).map(np.int8)),
    ("u32", tf.TensorSpec([], tf.uint32), st.integers(0, 2**32 - 1).map(np.uint32)),
    ("b", tf.TensorSpec([], tf.bool), st.booleans().map(np.bool_)),
    ("s", tf.TensorSpec([], tf.string), texts),
    ("v32", tf.TensorSpec([None], tf.float32), st.lists(float32s, max_size=4).map(
        lambda v: np.array(v, np.float32))),
    ("v64", tf.TensorSpec([None], tf.float64), st.lists(float64s, max_size=3).map(
        lambda v: np.array(v, np.float64))),
    ("vi", tf.TensorSpec([3], tf.int64), st.lists(int64s, min_size=3, max_size=3).map(
        lambda v: np.array(v, np.int64))),
    ("vs", tf.TensorSpec([None], tf.string), st.lists(texts, max_size=3).map(
        lambda v: np.array(v, object))),
    ("inner_count", tf.TensorSpec([], tf.int32), st.integers(-(2**31), 2**31 - 1).map(np.int32)),
    ("inner_name", tf.TensorSpec([], tf.string), texts),
]  # fmt: skip
NAMES = [name for name, _, _ in FIELDS]


def build(values):
    """The record shape: flat fields, a constant, None, and a nested dataclass in a namedtuple."""
    fields = dict(zip(NAMES, values, strict=True))
    inner = Inner(count=fields.pop("inner_count"), name=fields.pop("inner_name"))
    return {**fields, "const": [1, 2.5, "x"], "none": None, "pair": Pair(inner, 0.1)}


def to_tensor(value, dtype=None):
    """tf.constant, minding two traps: numpy str arrays drop trailing NULs, and eager
    tf.constant caches Python-float scalars (np.float64 is one) by value, so -0.0 converted
    after 0.0 comes back as +0.0 (seen with TF 2.21)."""
    if isinstance(value, str | bytes):
        return tf.constant(value, tf.string)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return tf.constant(value.tolist(), tf.string, shape=value.shape)
    return tf.constant(np.asarray(value), dtype)


def as_tensors(values):
    specs = [spec for _, spec, _ in FIELDS]
    return [to_tensor(v, spec.dtype) for v, spec in zip(values, specs, strict=True)]


@tf.function(input_signature=[spec for _, spec, _ in FIELDS])
def graph_encode(*tensors):
    return records.template("prop", build(tensors), "info").encode()


def check(text: str, values) -> None:
    parsed = strict_loads(text)
    reference = records.encode_py(build(values), "info")
    assert_same(parsed, strict_loads(reference))
    field = dict(zip(NAMES, values, strict=True))
    assert text == reference
    for name in ("f32", "f64", "f16", "v32", "v64"):
        assert_round_trips(parsed[name], field[name])
    assert parsed["s"] == field["s"] and parsed["vs"] == list(field["vs"])
    inner = {"count": int(field["inner_count"]), "name": field["inner_name"]}
    assert parsed["pair"] == {"first": inner, "second": 0.1}
    assert list(parsed)[-1] == "level" and parsed["level"] == "info"


@settings(FAST, max_examples=300)
@given(st.tuples(*[strategy for _, _, strategy in FIELDS]))
def test_graph_matches_twin(values):
    tensors = as_tensors(values)
    check(graph_encode(*tensors).numpy().decode("utf-8"), list(values))


@settings(FAST, max_examples=25)
@given(st.tuples(*[strategy for _, _, strategy in FIELDS]))
def test_eager_matches_twin(values):
    tensors = as_tensors(values)
    text = records.template("prop", build(tensors), "info").encode().numpy().decode("utf-8")
    check(text, list(values))
    assert records.encode_py(build(tensors), "info") == records.encode_py(build(values), "info")


@tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.string)])
def encode_strings(s, v):
    return records.template("bytes", {"s": s, "v": v}, "debug").encode()


@settings(FAST, max_examples=150)
@given(st.binary(max_size=16), st.lists(st.binary(max_size=8), max_size=3))
def test_invalid_utf8_becomes_replacement_character(s, v):
    text = encode_strings(tf.constant(s), tf.constant(v, tf.string)).numpy().decode("utf-8")
    want = {"s": s.decode("utf-8", "replace"), "v": [x.decode("utf-8", "replace") for x in v]}
    assert strict_loads(text) == {**want, "level": "debug"}
    assert text == records.encode_py({"s": s, "v": v}, "debug")


# -- subnormals through a decorated step ----------------------------------------------------
# Grappler folds constants into the recorded branch's function, and TensorFlow's CPU kernels
# treat subnormals as zero: floats that are (or fold into) constants are the case to test.


def float_bits(width: int) -> st.SearchStrategy[int]:
    """Bit patterns of float32 (width 32) or float64 (64) values, subnormals drawn often."""
    mantissa, sign = 23 if width == 32 else 52, 1 << (width - 1)
    exponent = (1 << (width - 1 - mantissa)) - 1  # all ones: Inf and NaN
    top = exponent << mantissa
    special = [0, sign, 1, sign | 1, (1 << mantissa) - 1, sign | ((1 << mantissa) - 1),
               1 << mantissa, sign | (1 << mantissa), top - 1, sign | (top - 1), top,
               sign | top, top | 1, top | (1 << (mantissa - 1))]  # fmt: skip
    if width == 64:  # subnormals whose digits float64 arithmetic would round the wrong way
        special += [101933982, sign | 237845958, 373757934, sign | 441713922]
    return st.one_of(
        st.tuples(st.sampled_from([0, sign]), st.integers(1, (1 << mantissa) - 1)).map(sum),
        st.sampled_from(special),
        st.integers(0, (1 << width) - 1),
    )


def from_bits(bits: list[int], width: int) -> np.ndarray:
    return np.array(bits, f"u{width // 8}").view(f"f{width // 8}")


def float_fields(values: np.ndarray, bits_arg: tf.Tensor, name: str) -> dict:
    """Fields holding ``values`` in every way a step can: constants, and computed in the step."""
    constants = [tf.constant(np.asarray(v)) for v in values]  # eagerly, not a cached float
    signed = np.int32 if values.dtype == np.float32 else np.int64
    return {
        **{f"{name}_c{i}": c for i, c in enumerate(constants)},  # scalar constants
        f"{name}_vector": tf.constant(values),
        f"{name}_stacked": tf.stack(constants),  # folded into one constant
        f"{name}_reshaped": tf.reshape(tf.identity(constants[0]), [1]),
        f"{name}_from_bits": tf.bitcast(tf.constant(values.view(signed)), values.dtype),
        f"{name}_argument": tf.bitcast(bits_arg, values.dtype),  # computed at run time
        f"{name}_element": tf.bitcast(bits_arg, values.dtype)[0],
    }


def step_record(logdir: str, f32: np.ndarray, f64: np.ndarray, mode: str = "decorated"):
    """Record the fields of :func:`float_fields` in a step of ``mode``; their text and the
    record as ``tbkit.read_records`` reads it back."""
    bits32 = tf.constant(f32.view(np.int32))
    bits64 = tf.constant(f64.view(np.int64))

    def step(bits32, bits64):
        fields = float_fields(f32, bits32, "f32") | float_fields(f64, bits64, "f64")
        tbkit.record("floats", fields)

    with tbkit.SummaryLogger(logdir, every={"info": 1}) as log:
        if mode == "decorated":
            log.train_step(step)(bits32, bits64)
        elif mode == "own_function":
            tf.function(step)(bits32, bits64)
        else:
            step(bits32, bits64)
    ((_, texts),) = summaries(logdir)["floats"]
    (record,) = tbkit.read_records(logdir, tag="floats")
    return texts[0].decode(), record


def expected_fields(f32: np.ndarray, f64: np.ndarray) -> dict:
    """What :func:`float_fields` holds, as numpy values for the twin."""
    fields = {}
    for name, values in (("f32", f32), ("f64", f64)):
        fields |= {f"{name}_c{i}": v for i, v in enumerate(values)}
        fields |= {f"{name}_{kind}": values for kind in ("vector", "stacked")}
        fields[f"{name}_reshaped"] = values[:1]
        fields |= {f"{name}_{kind}": values for kind in ("from_bits", "argument")}
        fields[f"{name}_element"] = values[0]
    return fields


def check_step_record(text: str, record, f32: np.ndarray, f64: np.ndarray) -> None:
    want = expected_fields(f32, f64)
    reference = records.encode_py(want, "info")
    assert text == reference
    assert_same(strict_loads(text), strict_loads(reference))
    for name, value in want.items():
        assert_round_trips(record.fields[name], value)


@pytest.mark.parametrize("mode", ["decorated", "own_function", "eager"])
def test_subnormal_constants_round_trip_in_a_step(tmp_path, mode):
    f32 = np.array([1.4e-45, 1e-40, -1e-40, 1e-38, 0.0, -0.0, 1.0], np.float32)
    f64 = np.array([5e-324, 1e-310, -1e-310, 2.2250738585072009e-308, 0.0, -0.0, 1.0])
    text, record = step_record(str(tmp_path), f32, f64, mode)
    check_step_record(text, record, f32, f64)
    assert record.fields["f32_c1"] == 9.9999461e-41 and record.fields["f64_c0"] == 5e-324


@settings(FAST, max_examples=30)
@given(st.lists(float_bits(32), min_size=1, max_size=6),
       st.lists(float_bits(64), min_size=1, max_size=6))  # fmt: skip
def test_decorated_step_keeps_every_float(bits32, bits64):
    f32, f64 = from_bits(bits32, 32), from_bits(bits64, 64)
    with tempfile.TemporaryDirectory() as logdir:
        text, record = step_record(logdir, f32, f64)
    check_step_record(text, record, f32, f64)


@settings(FAST, max_examples=300)
@given(st.lists(float_bits(32), max_size=8), st.lists(float_bits(64), max_size=8))
def test_float_bits_match_twin_in_a_graph(bits32, bits64):
    """Many bit patterns through one trace: values fed as arguments, every subnormal digit."""
    f32, f64 = from_bits(bits32, 32), from_bits(bits64, 64)
    text = encode_floats(tf.constant(f32), tf.constant(f64)).numpy().decode()
    assert text == records.encode_py({"f32": f32, "f64": f64}, "info")


@tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float64)])
def encode_floats(f32, f64):
    return records.template("floats", {"f32": f32, "f64": f64}, "info").encode()


# -- fixed examples -------------------------------------------------------------------------


def map_arrays(value, fn):
    """Copy a record, replacing each numpy leaf (not inside lists) by ``fn(leaf)``."""
    if isinstance(value, np.ndarray | np.generic):
        return fn(value)
    if isinstance(value, dict):
        return {key: map_arrays(item, fn) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_arrays(item, fn) for item in value))
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return dataclasses.replace(
            value, **{f.name: map_arrays(getattr(value, f.name), fn) for f in fields}
        )
    return value


def both(value, level="info"):
    """The graph's text (numpy leaves fed as function arguments) and the twin's, of one record."""
    arrays: list = []
    map_arrays(value, arrays.append)

    @tf.function
    def encode(*tensors):
        leaves = iter(tensors)
        return records.template("t", map_arrays(value, lambda _: next(leaves)), level).encode()

    graph = encode(*[to_tensor(a) for a in arrays])
    return graph.numpy().decode("utf-8"), records.encode_py(value, level)


FLOAT32_TEXT = [
    (1.0, "1.0"), (-0.0, "-0.0"), (0.0, "0.0"), (100.0, "100.0"), (16777216.0, "16777216.0"),
    (1e9, "1e+09"), (0.1, "0.100000001"), (1e-8, "9.99999994e-09"), (1e38, "9.99999968e+37"),
    (3.4028235e38, "3.40282347e+38"), (1.17549435e-38, "1.17549435e-38"),
    (1e-45, "1.40129846e-45"), (-1.5e-40, "-1.50000593e-40"), (np.nan, '"NaN"'),
    (np.inf, '"Infinity"'), (-np.inf, '"-Infinity"'),
]  # fmt: skip
FLOAT64_TEXT = [
    (1.0, "1.0"), (-0.0, "-0.0"), (1e16, "10000000000000000.0"), (1e17, "1e+17"),
    (0.1, "0.10000000000000001"), (1e-8, "1e-08"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"), (5e-324, "5e-324"),
    (-2.2250738585072009e-308, "-22250738585072009e-324"), (1e-310, "100000000000000e-324"),
    # m·2⁻¹⁰⁷⁴ with m·10³²⁴/2¹⁰⁷⁴ within 10⁻⁹ of a half-integer: float64 arithmetic rounds it
    # the wrong way; the exact digits are the twin's.
    (float(from_bits([101933982], 64)[0]), "503620787e-324"),
    (-float(from_bits([237845958], 64)[0]), "-1175115169e-324"),
    (-np.nan, '"NaN"'), (-np.inf, '"-Infinity"'),
]  # fmt: skip


@pytest.mark.parametrize("dtype, cases", [(np.float32, FLOAT32_TEXT), (np.float64, FLOAT64_TEXT)])
def test_float_edge_texts(dtype, cases):
    values = np.array([v for v, _ in cases], dtype)
    graph, twin = both({"x": values})
    assert graph == twin == '{"x":[' + ",".join(t for _, t in cases) + '],"level":"info"}'
    assert_round_trips(strict_loads(graph)["x"], values)
    graph, twin = both({f"x{i}": dtype(value) for i, (value, _) in enumerate(cases)})
    want = "{" + "".join(f'"x{i}":{text},' for i, (_, text) in enumerate(cases))
    assert graph == twin == want + '"level":"info"}'


def test_float16_and_bfloat16_are_widened_to_float32():
    @tf.function
    def encode(h, b):
        return records.template("t", {"h": h, "b": b}, "info").encode()

    h = tf.constant([6e-8, 0.1, -0.0, 65504.0], tf.float16)
    # A bfloat16 subnormal from its bits: tf.constant(1e-40, tf.bfloat16) flushes it to 0.
    b = tf.bitcast(tf.constant([0x0001, 0x3DCD, 0x4040], tf.uint16), tf.bfloat16)
    parsed = strict_loads(encode(h, b).numpy().decode())
    assert_round_trips(parsed["h"], h.numpy())
    assert_round_trips(parsed["b"], b.numpy().astype(np.float32))
    assert parsed["h"][1:] == [0.0999755859, -0.0, 65504.0]
    assert parsed["b"] == [9.18354962e-41, 0.100097656, 3.0]


def test_ints_bools_and_bounds():
    value = {
        "i64": np.array([-(2**63), 2**63 - 1], np.int64),
        "u64": np.uint64(2**64 - 1),
        "u8": np.array([0, 255], np.uint8),
        "i16": np.int16(-32768),
        "flags": np.array([True, False]),
        "py": [-(2**63), 2**63 - 1, True, None],
    }
    want = (
        '{"i64":[-9223372036854775808,9223372036854775807],"u64":18446744073709551615,'
        '"u8":[0,255],"i16":-32768,"flags":[true,false],'
        '"py":[-9223372036854775808,9223372036854775807,true,null],"level":"info"}'
    )
    graph, twin = both(value)
    assert graph == twin == want


def test_nested_records_python_constants_and_order():
    Opt = collections.namedtuple("Opt", ["lr", "beta"])

    @dataclasses.dataclass
    class Train:
        loss: object
        opt: object
        tags: object
        note: object = None

    loss = np.float32(0.5)
    value = Train(loss=loss, opt=Opt(lr=1e-3, beta={"b1": 0.9, "b2": np.float32(0.999)}),
                  tags=["a", 'q"b', 3, 2.5, False], note=b"caf\xc3\xa9 \xff")  # fmt: skip
    want = (
        '{"loss":0.5,"opt":{"lr":0.001,"beta":{"b1":0.9,"b2":0.999000013}},'
        '"tags":["a","q\\"b",3,2.5,false],"note":"café \ufffd","level":"warning"}'
    )
    graph, twin = both(value, level="WARNING")  # levels are case-insensitive
    assert graph == twin == want


def test_empty_records_and_vectors():
    assert both({})[0] == '{"level":"info"}'
    graph, twin = both({"e": {}, "v": np.zeros([0], np.float32), "s": np.array([], str), "l": []})
    assert graph == twin == '{"e":{},"v":[],"s":[],"l":[],"level":"info"}'


def test_string_escapes_and_invalid_utf8_in_tensors():
    strings = ["plain", 'q"b\\s\n\r\t\b\f', "\x00\x01\x1f\x7f", "é😀\u2028", ""]
    graph, twin = both({"s": np.array(strings, object), "one": np.array("x\x1by", object)})
    expected = (
        '{"s":["plain","q\\"b\\\\s\\n\\r\\t\\b\\f","\\u0000\\u0001\\u001f\x7f","é😀\u2028",""],'
        '"one":"x\\u001by","level":"info"}'
    )
    assert graph == twin == expected
    raw = tf.constant([b"ok", b"\xff", b"a\xed\xa0\x80z", b"\xe2\x82"])
    text = records.template("t", {"raw": raw}, "info").encode().numpy().decode("utf-8")
    assert strict_loads(text)["raw"] == ["ok", "\ufffd", "a\ufffd\ufffd\ufffdz", "\ufffd"]


def test_field_names_are_escaped():
    graph, twin = both({'a"b': np.int32(1), "line\nbreak": 2, "ü": {"\x01": np.float32(1)}})
    assert graph == twin == '{"a\\"b":1,"line\\nbreak":2,"ü":{"\\u0001":1.0},"level":"info"}'


def test_variables_and_lists_of_tensors_are_read_at_template_time():
    var = tf.Variable(1.5)

    @tf.function
    def encode():
        template = records.template("t", {"v": var, "pair": [var * 2.0, 7.0]}, "info")
        var.assign(100.0)  # the record keeps the value it saw
        return template.encode()

    assert encode().numpy().decode() == '{"v":1.5,"pair":[3.0,7.0],"level":"info"}'
    var.assign(1.5)
    assert records.encode_py({"v": var}, "info") == '{"v":1.5,"level":"info"}'


def test_encode_inside_a_cond_branch_uses_captured_tensors():
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.bool)])
    def step(x, recorded):
        template = records.template("t", {"x": x, "s": tf.strings.as_string(x)}, "info")
        return tf.cond(recorded, template.encode, lambda: tf.constant(""))

    assert step(2.5, True).numpy().decode() == '{"x":2.5,"s":"2.500000","level":"info"}'
    assert step(2.5, False).numpy() == b""


def test_template_adds_no_ops_but_stack_and_variable_reads():
    added = {}
    var = tf.Variable(0.5)

    @tf.function
    def trace(x, s, v):
        graph = tf.compat.v1.get_default_graph()

        def count(name, value):
            before = len(graph.get_operations())
            template = records.template(name, value, "info")
            added[name] = [op.type for op in graph.get_operations()[before:]]
            return template

        count("tensors", {"x": x, "s": s, "v": v, "n": {"x": x}, "c": 3.5, "l": [1, "a"]})
        count("variable", {"var": var})
        count("list", {"l": [x, 2.0]})
        count("constant", {"c": tf.constant(1e-40), "h": tf.constant(1.0, tf.float16)})
        encode_before = len(graph.get_operations())
        count("ten", {f"f{i}": x for i in range(9)} | {"s": s}).encode()
        added["encode ten"] = len(graph.get_operations()) - encode_before
        return x

    trace(tf.constant(1.0), tf.constant("a"), tf.constant([1, 2]))
    assert added["tensors"] == []
    assert added["variable"] == ["Placeholder", "ReadVariableOp"]  # the captured handle, a read
    assert sorted(added["list"]) == ["Const", "Pack"]
    # A float constant is bitcast where it is made: Grappler folds the bits into a constant.
    assert added["constant"] == ["Bitcast", "Cast", "Bitcast"]
    assert added["ten"] == []
    # Measured (TF 2.21): encode() of 9 float32 + 1 string scalar fields adds 66 ops: one
    # formatting pass per kind of value, one Const per text piece between fields, and 16 for
    # the string's over-cap marker (its length, head and text, chosen per string). The branches
    # of the string-escaping cond are functions, not counted here.
    assert added["encode ten"] < 75


# -- errors, pinned -------------------------------------------------------------------------


def test_reserved_field_is_refused():
    message = (
        "record 'train' field 'step' is reserved: record fields may not be named "
        "'level', 'run', 'step', 'tag', 'wall_time'."
    )
    with pytest.raises(TbkitValueError, match=exactly(message)):
        records.template("train", {"loss": 1.0, "step": 3}, "info")
    with pytest.raises(TbkitValueError, match=exactly(message.replace("'train' ", ""))):
        records.encode_py({"step": 3}, "info")
    nested = records.encode_py({"opt": {"step": 3}}, "info")  # only top-level names clash
    assert nested == '{"opt":{"step":3},"level":"info"}'


def test_non_str_key_is_refused():
    message = "record 'train' field 'opt' keys must be str (got 3 that is a <class 'int'>)."
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.template("train", {"opt": {3: 1.0}}, "info")
    message = "record 'train' keys must be str (got b'x' that is a <class 'bytes'>)."
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.template("train", {b"x": 1.0}, "info")


def test_unsupported_dtype_is_refused():
    message = (
        "record 'train' field 'opt.x' has dtype complex64: supported are bool, int8, int16, "
        "int32, int64, uint8, uint16, uint32, uint64, float16, bfloat16, float32, float64, "
        "string."
    )
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.template("train", {"opt": {"x": tf.constant(1j, tf.complex64)}}, "info")
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.encode_py({"opt": {"x": np.complex64(1j)}}, "info", tag="train")


def test_rank_2_and_unknown_rank_are_refused():
    message = (
        "record 'train' field 'grads' has shape (2, 3): supported are scalars and vectors "
        "(rank 0 or 1)."
    )
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.template("train", {"grads": tf.zeros([2, 3])}, "info")
    with pytest.raises(TbkitTypeError, match=exactly(message)):
        records.template("train", {"grads": np.zeros([2, 3])}, "info")
    unknown = (
        "record 'train' field 'x' has an unknown rank: supported are scalars and vectors "
        "(rank 0 or 1); give it a static rank with tf.ensure_shape."
    )

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def trace(x):
        return records.template("train", {"x": x}, "info").encode()

    with pytest.raises(TbkitTypeError, match=exactly(unknown)):
        trace.get_concrete_function()


def test_too_long_static_arrays_are_refused_run_time_ones_become_markers():
    message = (
        "record 'train' field 'v' has 1025 elements: at most 1024 are supported (MAX_ARRAY_LENGTH)."
    )
    assert records.MAX_ARRAY_LENGTH == 1024
    for value in (tf.zeros([1025]), np.zeros([1025]), [0] * 1025):
        with pytest.raises(TbkitValueError, match=exactly(message)):
            records.template("train", {"v": value}, "info")
    records.template("train", {"v": tf.zeros([1024])}, "info")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def encode(v):
        return records.template("train", {"v": v}, "info").encode()

    assert len(strict_loads(encode(tf.zeros([1024])).numpy().decode())["v"]) == 1024
    # A run-time length over the cap cannot be refused at trace time, and a logging op must not
    # fail the step: the field becomes a marker with the length and the first values.
    values = np.arange(5000, dtype=np.float32) / 3
    text = encode(tf.constant(values)).numpy().decode()
    head = [jsonenc.float32_text(float(v)) for v in values[: markers.HEAD_LENGTH]]
    assert text == '{"v":' + jsonenc.array_marker_text(5000, head) + ',"level":"info"}'
    marker = strict_loads(text)["v"]
    assert markers.is_marker(marker)
    body = marker["tbkit_over_cap"]
    assert np.array_equal(np.float32(body.pop("head")), values[: markers.HEAD_LENGTH])
    assert body == {"cap": "MAX_ARRAY_LENGTH", "limit": 1024, "length": 5000}
    assert strict_loads(encode(tf.zeros([1025])).numpy().decode())["v"]["tbkit_over_cap"][
        "length"
    ] == 1025


def test_too_long_string_tensors_become_markers_python_strings_are_refused():
    cap = records.MAX_STRING_BYTES
    assert cap == 16384
    message = (
        "record 'train' field 'note' is a string of 16385 UTF-8 bytes: at most 16384 are "
        "supported (MAX_STRING_BYTES); strings are refused, not truncated."
    )
    for value in ("x" * (cap + 1), b"x" * (cap + 1), np.str_("x" * (cap + 1))):
        with pytest.raises(TbkitValueError, match=exactly(message)):
            records.template("train", {"note": value}, "info")
    records.template("train", {"note": "é" * (cap // 2)}, "info")  # bytes, not characters

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(notes):
        return records.template("train", {"note": notes}, "info").encode()

    ok = encode(tf.constant(["y" * cap, "\n" * cap])).numpy().decode()
    assert strict_loads(ok)["note"] == ["y" * cap, "\n" * cap]
    # The head is cut at a character, never inside one; invalid UTF-8 is replaced first.
    notes = [b"short", "é\n".encode() * cap, b"\xff" + b"z" * cap]
    text = encode(tf.constant(notes)).numpy().decode()
    twin = jsonenc.encode_py({"note": tf.constant(notes)}, "info")
    assert text == twin
    short, long, broken = strict_loads(text)["note"]
    assert short == "short"
    assert long == {"tbkit_over_cap": {"cap": "MAX_STRING_BYTES", "limit": cap,
                                       "bytes": 3 * cap, "head": "é\n" * 512}}  # fmt: skip
    assert broken["tbkit_over_cap"]["head"] == "\ufffd" + "z" * 1023
    assert broken["tbkit_over_cap"]["bytes"] == cap + 1
    eager = records.template("train", {"note": tf.constant("z" * (cap + 1))}, "info").encode()
    assert strict_loads(eager.numpy().decode())["note"]["tbkit_over_cap"]["bytes"] == cap + 1


def test_the_marker_key_is_reserved_at_every_depth():
    message = (
        "record 'train' field 'opt.tbkit_over_cap' is reserved at every depth: "
        "'tbkit_over_cap' marks a value over a cap (see tbkit.data.markers)."
    )
    with pytest.raises(TbkitValueError, match=exactly(message)):
        records.template("train", {"opt": {"tbkit_over_cap": 1}}, "info")
    with pytest.raises(TbkitValueError, match=exactly(message)):
        jsonenc.encode_py({"opt": {"tbkit_over_cap": {"cap": "x"}}}, "info", tag="train")


def test_too_big_python_int_is_refused():
    message = (
        "record 'train' field 'n' must be an int that fits int64 "
        "(got 9223372036854775808 that is a <class 'int'>)."
    )
    with pytest.raises(TbkitValueError, match=exactly(message)):
        records.template("train", {"n": 2**63}, "info")
    message = message.replace("'n'", "'l[1]'").replace(
        "9223372036854775808", "-9223372036854775809"
    )
    with pytest.raises(TbkitValueError, match=exactly(message)):
        records.template("train", {"l": [0, -(2**63) - 1]}, "info")


def test_other_values_are_refused():
    cases = [
        (TbkitTypeError, 7,
         "record 'train' must be a dataclass instance, a namedtuple or a Mapping "
         "(got 7 that is a <class 'int'>)."),
        (TbkitTypeError, {"s": {1, 2}},
         "record 'train' field 's' must be a tensor, a number, a bool, a str, bytes, None, a "
         "list of those, or a nested dataclass, namedtuple or Mapping "
         "(got {1, 2} that is a <class 'set'>)."),
        (TbkitTypeError, {"l": [1, [2]]},
         "record 'train' field 'l[1]' must be a number, a bool, a str, bytes or None "
         "(got [2] that is a <class 'list'>)."),
        (TbkitTypeError, {"r": tf.ragged.constant([[1], []])},
         "record 'train' field 'r' must be a dense tensor (got <tf.RaggedTensor [[1], []]> "
         "that is a <class 'tensorflow.python.ops.ragged.ragged_tensor.RaggedTensor'>)."),
        (TbkitTypeError, {"l": [tf.constant(1.0), "x"]},
         "record 'train' field 'l' must be a list that tf.stack can stack into a vector: "
         "scalars of one dtype (TypeError from tf.stack)."),
    ]  # fmt: skip
    for error, value, message in cases:
        with pytest.raises(error, match=exactly(message)):
            records.template("train", value, "info")
    loop: dict = {}
    loop["self"] = loop
    deep = f"record 'train' field '{'.'.join(['self'] * 16)}' nests records deeper than 16 levels"
    with pytest.raises(
        TbkitValueError, match=exactly(f"{deep} (MAX_DEPTH); does a record contain itself?")
    ):
        records.template("train", loop, "info")
    level = (
        "'level' must be one of 'debug', 'info', 'warning', 'error' "
        "(got 'verbose' that is a <class 'str'>)."
    )
    with pytest.raises(TbkitValueError, match=exactly(level)):
        records.template("train", {}, "verbose")
    tag = "'tag' must be a str (got 1 that is a <class 'int'>)."
    with pytest.raises(TbkitTypeError, match=exactly(tag)):
        records.template(1, {}, "info")
