"""Records → one strict-JSON object per step, built inside the TensorFlow graph.

A user's record (dataclass instance, namedtuple or Mapping; nested ones become nested JSON
objects, which readers flatten to dotted names) is turned into JSON text in two stages:

* :func:`template`, at trace time, walks the record, checks every field (names, dtypes, ranks,
  static lengths, Python constants) and raises at once with a message naming the field. It
  encodes Python and numpy values right away into constant text and keeps the tensors. It adds
  no ops, except a ``Pack`` for a list of tensors, a read for a variable and a ``Bitcast`` for a
  float that folds into a constant (folded with it), so a step that records nothing pays
  nothing for formatting.
* :meth:`RecordTemplate.encode` builds the formatting ops; tbkit calls it only inside the
  branch that records. Tensors of one kind (bools, ints, float32, float64, strings) are
  formatted together, whatever their number, and the object ends in one ``tf.strings.join``.

The text is the same as :func:`~tbkit.summary.jsonenc.encode_py` gives (the pure twin; see that
module for the leaf encodings), for every float bit pattern. ``tf.strings.format`` is not used:
it prints ``nan`` and ``[1 2]``. What ``tf.strings.as_string`` prints, and what is done about it:

* ``precision=9/17, shortest=True`` is C's ``%.9g``/``%.17g``: it round-trips float32/float64,
  but prints integral values without a point (``1``, ``-0``, ``1e+09``): ``.0`` is appended
  when the text has no point and no exponent, so ``-0.0`` keeps its sign.
* ``nan``, ``-nan``, ``inf``, ``-inf``: replaced by the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"``.
* Subnormals print as ``0``: TensorFlow's CPU kernels run with denormals-are-zero, so every
  float op (a cast to float64 too) reads them as zero. They are rebuilt from their bits: a
  float32 subnormal as the exact float64 ``m·2⁻¹⁴⁹``; a float64 one as ``round(m·10³²⁴/2¹⁰⁷⁴)``
  in exact int64 arithmetic, written ``<int>e-324``.

Floats therefore reach their encoder as bits (``tf.bitcast`` to int32/int64). A float field that
Grappler can fold into a constant (``tf.constant(1e-40)``, a ``tf.stack`` of constants) is
bitcast where the record is made, because Grappler turns an all-equal positive subnormal
constant inside the recorded branch's function into zeros before any of its ops run; there the
bitcast folds into an int constant and costs nothing per step. Other floats are bitcast inside
the recorded branch.

Strings are transcoded UTF-8 → UTF-8 with invalid sequences replaced by U+FFFD (as Python's
``errors="replace"``), then escaped with seven RE2 rewrites (``\\ " \\n \\r \\t \\b \\f``);
a string holding another control character goes through a 256-entry byte table instead. Both
work on bytes safely: the escaped characters are ASCII, which no multi-byte sequence contains.
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from typing import Any

import tensorflow as tf

from tbkit.data import markers
from tbkit.data.errors import TbkitTypeError, got
from tbkit.data.levels import LEVELS, level_index
from tbkit.summary import jsonenc
from tbkit.summary.jsonenc import MAX_ARRAY_LENGTH, MAX_STRING_BYTES, encode_py

__all__ = [
    "MAX_ARRAY_LENGTH", "MAX_STRING_BYTES", "RecordTemplate", "constant_bits", "encode_py",
    "template",
]  # fmt: skip

# How each supported dtype is formatted: values of one kind are formatted together.
_KIND = {"bool": "bool", "uint64": "uint64", "float64": "float64", "string": "string"}
_KIND |= dict.fromkeys(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"], "int")
_KIND |= dict.fromkeys(["float16", "bfloat16", "float32"], "float32")
_WIDEN = {"int": tf.int64, "float32": tf.float32}
_BITS = {"float32": tf.int32, "float64": tf.int64}  # floats reach their encoder as bits

# A float64 subnormal m·2⁻¹⁰⁷⁴ is written as round(m·C)e-324, C = 10³²⁴/2¹⁰⁷⁴ ≈ 4.94, in int64
# arithmetic on 26-bit limbs: C cut after 130 fraction bits (C_LIMBS[0] is its integer part)
# and m = hi·2²⁶ + lo. The cut makes m·C at most 2⁵²·2⁻¹³⁰ = 2⁻⁷⁸ too small, and no m < 2⁵²
# puts m·C within 2⁻⁵⁴ of a half-integer (the continued fraction of C says so), so the
# rounding is exact: the same digits as the twin's Fraction arithmetic.
_LIMB = 26
_C_CUT = int(Fraction(10**324, 2**1074) * 2 ** (5 * _LIMB))
_C_LIMBS = [(_C_CUT >> (_LIMB * (5 - i))) & (2**_LIMB - 1) for i in range(6)]
_STRING_MARKER = jsonenc.marker_prefix("MAX_STRING_BYTES", MAX_STRING_BYTES, "bytes")
_ARRAY_MARKER = jsonenc.marker_prefix("MAX_ARRAY_LENGTH", MAX_ARRAY_LENGTH, "length")
_SEPARATOR = b"\xff"  # never occurs in valid UTF-8
_ESCAPES = [
    json.dumps(chr(b), ensure_ascii=False)[1:-1].encode() if b < 128 else bytes([b])
    for b in range(256)
]
_NAMED_ESCAPES_ONLY = r"[^\x00-\x07\x0b\x0e-\x1f]*"  # no control character but \b\t\n\f\r
_NAMED_ESCAPES = [  # RE2 pattern and rewrite; the backslash goes first
    (r"\\", r"\\\\"), ('"', r'\\"'), (r"\n", r"\\n"), (r"\r", r"\\r"), (r"\t", r"\\t"),
    (r"\x08", r"\\b"), (r"\x0c", r"\\f"),
]  # fmt: skip


def _finish_floats(text: tf.Tensor) -> tf.Tensor:
    # Three RE2 rewrites cost a quarter of the equivalent arithmetic tests (measured).
    text = tf.strings.regex_replace(text, "^(-?[0-9]+)$", "\\1.0")
    text = tf.strings.regex_replace(text, "^-?nan$", '"NaN"')
    return tf.strings.regex_replace(text, "^(-?)inf$", '"\\1Infinity"')


def _float32_texts(bits: tf.Tensor, floats: tf.Tensor | None = None) -> tf.Tensor:
    """Texts of float32 values given as their int32 bits (and as floats, if at hand)."""
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFF)
    tiny = tf.cast(magnitude, tf.float64) * 2.0**-149  # exact for zeros and subnormals
    normal = tf.cast(tf.bitcast(bits, tf.float32) if floats is None else floats, tf.float64)
    wide = tf.where(magnitude < 0x00800000, tf.where(bits < 0, -tiny, tiny), normal)
    return _finish_floats(tf.strings.as_string(wide, precision=9, shortest=True))


def _float64_texts(bits: tf.Tensor, floats: tf.Tensor | None = None) -> tf.Tensor:
    """Texts of float64 values given as their int64 bits (and as floats, if at hand)."""
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFFFFFFFFFF)
    subnormal = tf.logical_and(magnitude > 0, magnitude < 2**52)
    mantissa = tf.bitwise.bitwise_and(magnitude, 2**52 - 1)
    mask = 2**_LIMB - 1
    high = tf.bitwise.right_shift(mantissa, _LIMB)[:, None]
    low = tf.bitwise.bitwise_and(mantissa, mask)[:, None]
    # columns[i], of weight 2^(26-26i), sums high·C_LIMBS[i] and low·C_LIMBS[i-1]: < 2^53.
    by_high, by_low = high * _C_LIMBS, low * _C_LIMBS
    columns = tf.unstack(
        tf.concat([by_high[:, :1], by_high[:, 1:] + by_low[:, :-1], by_low[:, -1:]], 1), axis=1
    )
    columns[2] += 2 ** (_LIMB - 1)  # one half, for rounding to nearest
    for k in range(6, 1, -1):  # carry the fraction columns up into the units column
        columns[k - 1] += tf.bitwise.right_shift(columns[k], _LIMB)
    digits = columns[0] * 2**_LIMB + columns[1]
    subnormal_text = tf.strings.join([tf.where(bits < 0, "-", ""), tf.strings.as_string(digits)])
    wide = tf.bitcast(bits, tf.float64) if floats is None else floats
    text = _finish_floats(tf.strings.as_string(wide, precision=17, shortest=True))
    return tf.where(subnormal, subnormal_text + "e-324", text)


def _string_texts(raw: tf.Tensor) -> tf.Tensor:
    valid = tf.strings.unicode_transcode(
        raw, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD,
        replace_control_characters=False,
    )  # fmt: skip
    nbytes = tf.strings.length(raw)
    over = nbytes > MAX_STRING_BYTES  # such a string is written as a marker holding its head
    valid = tf.where(over, tf.strings.substr(valid, 0, markers.HEAD_CHARS, unit="UTF8_CHAR"), valid)
    # RE2 passes for the seven named escapes are 8-14 times faster than the byte table on
    # long strings and as fast on short ones; the table serves other control characters.
    named_only = tf.reduce_all(tf.strings.regex_full_match(valid, _NAMED_ESCAPES_ONLY))
    escaped = tf.cond(named_only, lambda: _escape_named(valid), lambda: _escape_bytes(valid))
    quoted = tf.strings.join(['"', escaped, '"'])
    size = tf.strings.as_string(nbytes)
    marker = tf.strings.join([_STRING_MARKER, size, ',"head":', quoted, "}}"])
    return tf.where(over, marker, quoted)


def _escape_named(valid: tf.Tensor) -> tf.Tensor:
    for pattern, rewrite in _NAMED_ESCAPES:
        valid = tf.strings.regex_replace(valid, pattern, rewrite)
    return valid


def _escape_bytes(valid: tf.Tensor) -> tf.Tensor:
    # Join the strings, each followed by a byte that valid UTF-8 never holds, map every byte
    # through the table, and split again (n + 1 parts, the last one empty).
    marked = tf.io.decode_raw(tf.strings.reduce_join(valid + _SEPARATOR), tf.uint8)
    escaped = tf.strings.reduce_join(tf.gather(tf.constant(_ESCAPES), tf.cast(marked, tf.int32)))
    parts = tf.raw_ops.StringSplitV2(input=tf.reshape(escaped, [1]), sep=_SEPARATOR).values
    return tf.reshape(parts[:-1], tf.shape(valid))


_ENCODERS = {
    "bool": tf.strings.as_string,
    "int": tf.strings.as_string,
    "uint64": tf.strings.as_string,
    "float32": _float32_texts,
    "float64": _float64_texts,
    "string": _string_texts,
}

#: Encoders that work element by element on a tensor of any rank (the others take vectors).
_ELEMENTWISE = frozenset({"bool", "int", "uint64", "float32"})


def _widen(tensor: tf.Tensor, kind: str) -> tf.Tensor:
    """Ints as int64, float16 and bfloat16 as float32; other tensors unchanged."""
    wide = _WIDEN.get(kind)
    return tensor if wide is None or tensor.dtype == wide else tf.cast(tensor, wide)


def _bits(tensor: tf.Tensor, kind: str) -> tf.Tensor | None:
    """The int bits of a float tensor (widened first), None for other kinds."""
    return tf.bitcast(_widen(tensor, kind), _BITS[kind]) if kind in _BITS else None


def constant_bits(tensor: tf.Tensor, kind: str = "float32") -> tf.Tensor | None:
    """The bits of a float ``tensor`` as ``kind`` (``"float32"`` or ``"float64"``), bitcast now,
    if it folds into a constant; else None.

    Grappler turns an all-equal, positive subnormal float constant that it pushes into (or
    folds inside) the function of a recorded branch into zeros before any op there runs (seen
    with TF 2.21: ``tf.constant(1e-40)`` logged as ``0.0``). The bitcast, made where the
    constant is, folds into an int constant there: the bits survive, at no cost per step. It is
    made in the constant's own graph, also when a record is built again in the recorded branch
    from the step's tensors (:mod:`tbkit.summary.lazy`).
    """
    if not _folds_to_constant(tensor):
        return None
    with tensor.graph.as_default(), tf.control_dependencies(None):
        return _bits(tensor, kind)


def _folds_to_constant(tensor: tf.Tensor) -> bool:
    """Whether ``tensor`` is a graph tensor made only by stateless ops from constants, so that
    Grappler may fold it into a constant (eager tensors are values already)."""
    if tf.executing_eagerly() or not hasattr(tensor, "graph"):
        return False
    stack, seen = [tensor.op], set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type != "Const" and (not op.inputs or op.op_def.is_stateful):
            return False  # a placeholder, a variable read, a random op...
        stack.extend(t.op for t in op.inputs)
    return True


class _Leaf:
    __slots__ = ("where", "tensor", "kind", "bits", "unbounded")

    def __init__(self, tag: str, path: str, tensor: tf.Tensor):
        shape = None if tensor.shape.rank is None else tuple(tensor.shape.as_list())
        jsonenc.check_dtype_and_shape(jsonenc.describe(tag, path), tensor.dtype.name, shape)
        self.where = jsonenc.describe(tag, path, quote=False)
        self.kind = _KIND[tensor.dtype.name]
        #: a vector whose length is only known at run time: it may be over MAX_ARRAY_LENGTH
        self.unbounded = shape == (None,)
        self.set_tensor(tensor)

    def set_tensor(self, tensor: tf.Tensor) -> None:
        """Hold ``tensor``; a float that folds into a constant is taken as bits now (see
        :func:`constant_bits`), other floats are bitcast inside the recorded branch."""
        self.tensor = tensor
        self.bits = constant_bits(tensor, self.kind) if self.kind in _BITS else None

    def value(self) -> tf.Tensor:
        """The tensor as its encoder takes it: widened, and floats as their bits."""
        if self.bits is not None:
            return self.bits
        bits = _bits(self.tensor, self.kind)
        return _widen(self.tensor, self.kind) if bits is None else bits


def _array_text(values: tf.Tensor, length: tf.Tensor | None) -> tf.Tensor:
    """A vector's JSON array from its elements' texts; a marker if ``length`` (the vector's
    length, given when it is only known at run time) is over MAX_ARRAY_LENGTH, in which case
    ``values`` holds the head only."""
    array = tf.strings.join(["[", tf.strings.reduce_join(values, separator=","), "]"])
    if length is None:
        return array
    marker = tf.strings.join([_ARRAY_MARKER, tf.strings.as_string(length), ',"head":', array, "}}"])
    return tf.where(length > MAX_ARRAY_LENGTH, marker, array)


def _format_scalars(kind: str, leaves: list[_Leaf]) -> list[list[Any]]:
    """Format scalars of one kind: one stack in, one encoder call, one unstack out (a lone
    scalar of an element-wise kind is formatted as it is)."""
    lone = len(leaves) == 1 and kind in _ELEMENTWISE

    def flat(values: list[tf.Tensor]) -> tf.Tensor:
        if lone:
            return values[0]
        return tf.stack(values) if len(values) > 1 else tf.reshape(values[0], [1])

    if kind in _BITS and all(leaf.bits is None for leaf in leaves):
        # Floats the step computes: stacked as they are (a copy keeps every bit), their bits
        # taken once, and the encoder reads both.
        floats = flat([_widen(leaf.tensor, kind) for leaf in leaves])
        encoded = _ENCODERS[kind](tf.bitcast(floats, _BITS[kind]), floats)
    else:
        encoded = _ENCODERS[kind](flat([leaf.value() for leaf in leaves]))
    return [[encoded]] if lone else [[part] for part in tf.unstack(encoded, num=len(leaves))]


def _format_kind(kind: str, leaves: list[_Leaf]) -> list[list[Any]]:
    """Format the tensors of one kind with one encoder call: JSON pieces for each leaf."""
    if all(leaf.tensor.shape.rank == 0 for leaf in leaves):
        return _format_scalars(kind, leaves)
    values = [leaf.value() for leaf in leaves]
    lengths = [tf.size(leaf.tensor) if leaf.unbounded else None for leaf in leaves]
    values = [  # an over-long vector is formatted as far as its marker's head
        v if n is None else v[: tf.where(n > MAX_ARRAY_LENGTH, markers.HEAD_LENGTH, n)]
        for v, n in zip(values, lengths, strict=True)
    ]
    ranks = [v.shape.rank for v in values]
    flat = [v if rank else tf.reshape(v, [1]) for v, rank in zip(values, ranks, strict=True)]
    encoded = _ENCODERS[kind](tf.concat(flat, 0) if len(flat) > 1 else flat[0])
    if len(values) == 1:
        parts = [encoded]
    else:
        sizes = [v.shape[0] for v in flat]
        if None in sizes:
            sizes = tf.stack(
                [tf.size(v) if s is None else s for v, s in zip(flat, sizes, strict=True)]
            )
        parts = tf.split(encoded, sizes, num=len(values))
    return [
        [_array_text(part, n)] if rank else [tf.reshape(part, [])]
        for part, rank, n in zip(parts, ranks, lengths, strict=True)
    ]


class RecordTemplate:
    """A checked record, ready to build its JSON text in the graph (see :func:`template`).

    Attributes:
        tensors: the tensor fields in field order (lists of tensors stacked, variables read).
        dtypes: field path → the dtype it is written from, for the summary's metadata
            (:func:`tbkit.summary.jsonenc.leaf_dtype`; fields without one left out).
    """

    def __init__(
        self, pieces: list[Any], leaves: list[_Leaf], dtypes: dict[str, str] | None = None
    ):
        self._pieces, self._leaves = pieces, leaves
        self.tensors = [leaf.tensor for leaf in leaves]
        self.dtypes = {} if dtypes is None else dtypes

    @property
    def leaves(self) -> list[_Leaf]:
        """The tensor fields, in field order: where each is (``where``), its tensor, and whether
        its length is only known at run time (``unbounded``)."""
        return list(self._leaves)

    def with_tensors(self, tensors: list[tf.Tensor] | tuple) -> RecordTemplate:
        """The same record over other tensors of the same dtypes and shapes, in field order
        (the values carried out of an XLA body, or all-reduced across replicas)."""
        leaves = []
        for leaf, tensor in zip(self._leaves, tensors, strict=True):
            twin = copy.copy(leaf)
            twin.set_tensor(tensor)
            leaves.append(twin)
        return RecordTemplate(self._pieces, leaves, self.dtypes)

    def encode(self) -> tf.Tensor:
        """Build the ops that format the record: a scalar ``tf.string``, the JSON object text.

        Uses only the tensors captured by :func:`template`, so it may run later in the same
        trace, e.g. inside a ``tf.cond`` branch. It cannot fail on the values: a string
        tensor longer than ``MAX_STRING_BYTES`` bytes, or a vector of run-time length longer
        than ``MAX_ARRAY_LENGTH``, is written as an over-cap marker (:mod:`tbkit.data.markers`).
        """
        kinds: dict[str, list[int]] = {}
        for i, leaf in enumerate(self._leaves):
            kinds.setdefault(leaf.kind, []).append(i)
        texts: dict[int, list[Any]] = {}
        for kind, indices in kinds.items():
            leaves = [self._leaves[i] for i in indices]
            texts.update(zip(indices, _format_kind(kind, leaves), strict=True))
        joined: list[Any] = []
        for piece in self._pieces:
            for item in texts[piece] if isinstance(piece, int) else [piece]:
                if isinstance(item, str) and joined and isinstance(joined[-1], str):
                    joined[-1] += item
                else:
                    joined.append(item)
        return tf.strings.join(joined)


def _as_tensor(tag: str, path: str, value: Any) -> tf.Tensor | None:
    """The tensor a field holds (None for Python and numpy values)."""
    if isinstance(value, tf.RaggedTensor | tf.SparseTensor):
        raise TbkitTypeError(
            f"{jsonenc.describe(tag, path)} must be a dense tensor ({got(value)})."
        )
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        return tf.convert_to_tensor(value)  # reads a variable now, as the user's code sees it
    if isinstance(value, list | tuple) and any(
        tf.is_tensor(v) or isinstance(v, tf.Variable) for v in value
    ):
        try:
            return tf.stack(value)
        except (TypeError, ValueError) as e:
            raise TbkitTypeError(
                f"{jsonenc.describe(tag, path)} must be a list that tf.stack can stack into a "
                f"vector: scalars of one dtype ({type(e).__name__} from tf.stack)."
            ) from e
    return None


def template(tag: str, value: Any, level: str) -> RecordTemplate:
    """Check a record at trace time and prepare its in-graph JSON encoding.

    Args:
        tag: the record's name (used in messages).
        value: a dataclass instance, namedtuple or Mapping whose fields are tensors, variables,
            numpy values, Python scalars, lists of those, or nested records.
        level: the level name written as the ``"level"`` field.

    Returns:
        A :class:`RecordTemplate`; its ``encode()`` builds the formatting ops.

    Raises:
        TbkitTypeError: the value is not a record, a key is not a str, or a field has an
            unsupported type, dtype or rank.
        TbkitValueError: a reserved field name, a too-long string or static length, an int
            outside int64, or an unknown level.
    """
    if not isinstance(tag, str):
        raise TbkitTypeError(f"'tag' must be a str ({got(tag)}).")
    level = LEVELS[level_index(level)]
    leaves: list[_Leaf] = []
    dtypes: dict[str, str] = {}

    def leaf(tag: str | None, path: str, field: Any) -> Any:
        tensor = _as_tensor(tag, path, field)
        dtype = jsonenc.leaf_dtype(field if tensor is None else tensor)
        if dtype is not None:
            dtypes[path] = dtype
        if tensor is None:
            return jsonenc.encode_leaf(tag, path, field)
        leaves.append(_Leaf(tag, path, tensor))
        return len(leaves) - 1

    return RecordTemplate(jsonenc.walk(value, tag, level, leaf), leaves, dtypes)
