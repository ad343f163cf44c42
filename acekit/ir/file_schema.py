"""What a saved graph may contain, checked field by field before anything is built from it.

Graph files are untrusted input: a file that ``torch.load(weights_only=True)`` accepts
holds only plain data and tensors, but the strings in it (op names, node names, tensor
refs, attribute keys) must never reach code that gives them meaning unchecked. This
module is the file format's contract: :func:`check_graph_data` walks the whole payload
and raises :class:`BadField` at the first field a graph written by acekit could not
contain, so that the loader builds nothing from a bad file. The rules:

* ops are in the op schema table, with attribute keys and value types from the op's
  schema and an input/output count it allows;
* node and value names are dotted names of ``[A-Za-z0-9_]``, tensor refs dotted paths of
  ``[A-Za-z0-9_-]`` (no ``..``, no ``/``), symbolic dimensions identifiers, every name
  unique, every input a value an earlier node defines;
* shapes and tensors are bounded (:data:`MAX_ELEMENTS` elements), a tensor's dtype and
  shape agree with the node that reads it, and a small file cannot expand into a huge
  tensor;
* quantization specs have finite, positive scales and zero points inside their range;
* free text (graph name, subgraph paths, source locations) is bounded and printable.

The encoding of attribute values (dtypes by name) lives here too, beside its checks.
"""

from __future__ import annotations

import difflib
import keyword
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from acekit.ir.quant import Granularity, QuantSpec
from acekit.ir.schema import AttrSpec, OpSchema, OpTable
from acekit.ir.tensor_type import dtype_name

#: Longest free text (graph name, subgraph path, source location, quant reason).
MAX_TEXT = 4096
#: Longest node or value name.
MAX_NAME = 1024
#: Most items in one list of the file (nodes, tensors, scales, an attribute's tuple).
MAX_ITEMS = 1 << 22
#: Most items the attribute values of one file hold together (shared ones counted each
#: time they appear).
MAX_ATTRIBUTE_ITEMS = 1 << 20
#: Deepest nesting of an attribute value.
MAX_DEPTH = 16
#: Highest tensor rank.
MAX_RANK = 64
#: Most elements of one tensor, or of one value's shape when all its dims are known.
MAX_ELEMENTS = 1 << 31
#: Largest tensor that may share its data between elements (an expanded constant).
MAX_EXPANDED_BYTES = 16 << 20

GRAPH_KEYS = ("format", "version", "name", "nodes", "tensors")
NODE_KEYS = (
    "op",
    "name",
    "inputs",
    "outputs",
    "attrs",
    "subgraph",
    "source_name",
    "source_location",
)
OUTPUT_KEYS = ("name", "type", "quant")
TYPE_KEYS = ("dtype", "shape")
QUANT_KEYS = (
    "bits",
    "signed",
    "symmetric",
    "granularity",
    "axis",
    "scale",
    "zero_point",
    "skip",
    "reason",
)
#: Quant keys a file may leave out (written only when set).
OPTIONAL_QUANT_KEYS = ("block_size",)
#: How a dtype inside an attribute value is written: ``{"__dtype__": "f32"}``.
DTYPE_MARK = "__dtype__"

_NAME_RE = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*\Z")
_REF_PART_RE = re.compile(r"[A-Za-z0-9_\-]+\Z")
_SYMBOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHOWN = 60


class BadField(Exception):
    """The first field of graph data that a saved graph cannot hold.

    ``field`` locates it (``nodes[3].attrs``; empty for the whole data), ``problem`` says
    what is wrong.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def show(value: object) -> str:
    """``repr(value)`` cut to a readable length: what messages quote from a file."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` cannot name a tensor (a dotted path of ``[A-Za-z0-9_-]`` parts), or None.

    Refs become attribute paths of generated modules (``state_dict`` keys), so each part
    must be inert in generated source and no part may be a Python keyword.
    """
    if not 0 < len(ref) <= MAX_NAME:
        return f"a tensor ref must have 1 to {MAX_NAME} characters, got {len(ref)}"
    for part in ref.split("."):
        if not _REF_PART_RE.match(part):
            return (
                f"tensor ref {show(ref)} must be dotted parts of letters, digits, '_' and "
                "'-' (no empty part, no '/')"
            )
        if keyword.iskeyword(part):
            return f"tensor ref {show(ref)} has the Python keyword {part!r} as a part"
    return None


# -- attribute values: encoding ------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """An attribute value as file data: dtypes by name, containers rebuilt."""
    # Tuples and lists both survive torch's safe unpickler, but dtypes are encoded by
    # name so that files never depend on pickling torch internals.
    if isinstance(value, torch.dtype):
        return {DTYPE_MARK: dtype_name(value)}
    if isinstance(value, tuple):
        return tuple(encode_value(v) for v in value)
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_value(v) for k, v in value.items()}
    return value


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value` (on data :func:`check_graph_data` accepted)."""
    if isinstance(value, dict):
        if set(value) == {DTYPE_MARK}:
            return known_dtypes()[value[DTYPE_MARK]]
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(decode_value(v) for v in value)
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def known_dtypes() -> dict[str, torch.dtype]:
    """Every dtype name a file may use: the short names and torch's own names."""
    if not _KNOWN_DTYPES:
        for name, dtype in vars(torch).items():
            if isinstance(dtype, torch.dtype):
                _KNOWN_DTYPES[name] = dtype
                _KNOWN_DTYPES[dtype_name(dtype)] = dtype
    return _KNOWN_DTYPES


_KNOWN_DTYPES: dict[str, torch.dtype] = {}


# -- the checker ----------------------------------------------------------------------------


def check_graph_data(data: object, ops: OpTable, *, fmt: str, version: int) -> None:
    """Raise :class:`BadField` at the first field of ``data`` a saved graph cannot hold.

    ``ops`` is the op schema table the graph's ops must come from; ``fmt`` and
    ``version`` the file format's tag.
    """
    _GraphChecker(ops).check(data, fmt, version)


class _GraphChecker:
    def __init__(self, ops: OpTable) -> None:
        self.ops = ops
        self.values: set[str] = set()
        self.node_names: set[str] = set()
        self.tensors: Mapping[str, torch.Tensor] = {}
        self.input_indices: dict[int, str] = {}
        # Attribute values may repeat one pickled object many times over (a small file,
        # a huge walk): all of them together get one budget of items.
        self.budget = [MAX_ATTRIBUTE_ITEMS]

    def check(self, data: object, fmt: str, version: int) -> None:
        if not isinstance(data, dict):
            raise BadField("", f"expected a dict, got {type(data).__name__}")
        if data.get("format") != fmt:
            raise BadField("format", f"not an acekit graph (format {show(data.get('format'))})")
        if data.get("version") != version:
            raise BadField(
                "version", f"graph format version {show(data.get('version'))} is not supported"
            )
        _keys(data, "", GRAPH_KEYS)
        _text(data["name"], "name")
        self._tensors(data["tensors"])
        nodes = _sequence(data["nodes"], "nodes")
        for i, entry in enumerate(nodes):
            self._node(entry, f"nodes[{i}]", last=i == len(nodes) - 1)
        if not nodes or nodes[-1].get("op") != "output":
            raise BadField("nodes", "the last node must be the graph's one output node")
        expected = set(range(len(self.input_indices)))
        if set(self.input_indices) != expected:
            raise BadField(
                "nodes", f"input indices {sorted(self.input_indices)} are not 0..n-1 each once"
            )

    # -- tensors ------------------------------------------------------------------------

    def _tensors(self, tensors: object) -> None:
        if not isinstance(tensors, dict):
            raise BadField("tensors", f"expected a dict, got {type(tensors).__name__}")
        if len(tensors) > MAX_ITEMS:
            raise BadField("tensors", f"{len(tensors)} tensors, at most {MAX_ITEMS}")
        for ref, tensor in tensors.items():
            field = f"tensors[{show(ref)}]"
            if not isinstance(ref, str):
                raise BadField(field, f"a tensor ref must be a string, got {type(ref).__name__}")
            problem = ref_problem(ref)
            if problem:
                raise BadField(field, problem)
            _tensor(tensor, field)
        refs = set(tensors)
        for ref in tensors:
            parts = ref.split(".")
            for end in range(1, len(parts)):
                prefix = ".".join(parts[:end])
                if prefix in refs:
                    raise BadField(
                        f"tensors[{show(ref)}]",
                        f"ref {show(ref)} lies inside tensor {show(prefix)}: a tensor "
                        "cannot also be a module holding tensors",
                    )
        self.tensors = tensors

    # -- nodes --------------------------------------------------------------------------

    def _node(self, entry: object, field: str, *, last: bool) -> None:
        _keys(entry, field, NODE_KEYS)
        assert isinstance(entry, dict)
        op = entry["op"]
        if not isinstance(op, str):
            raise BadField(f"{field}.op", f"expected a string, got {type(op).__name__}")
        schema = self.ops.get(op)
        if schema is None:
            close = difflib.get_close_matches(op, list(self.ops), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadField(
                f"{field}.op",
                f"op {show(op)} is not in the op schema table{hint}; if a plugin adds it, "
                "install and enable that plugin",
            )
        name = self._new_name(entry["name"], f"{field}.name", self.node_names)
        self.node_names.add(name)
        what = f"node {name!r} ({op})"
        _path_text(entry["subgraph"], f"{field}.subgraph")
        _text(entry["source_name"], f"{field}.source_name")
        if entry["source_location"] is not None:
            _text(entry["source_location"], f"{field}.source_location")
        inputs = self._inputs(entry["inputs"], f"{field}.inputs", what, schema)
        attributes = self._attrs(entry["attrs"], f"{field}.attrs", what, schema)
        if op == "output":
            if not last:
                raise BadField(f"{field}.op", f"{what} must be the last node")
            _structure(attributes.get("structure"), len(inputs), f"{field}.attrs", 0)
        elif op == "input":
            self._input_index(attributes["index"], f"{field}.attrs", what)
        outputs = _sequence(entry["outputs"], f"{field}.outputs")
        if schema.outputs is not None and len(outputs) != schema.outputs:
            raise BadField(
                f"{field}.outputs",
                f"{what} has {len(outputs)} outputs, its op has {schema.outputs}",
            )
        for j, output in enumerate(outputs):
            self._output(output, f"{field}.outputs[{j}]", op, attributes)

    def _new_name(self, name: object, field: str, taken: set[str]) -> str:
        if not isinstance(name, str):
            raise BadField(field, f"a name must be a string, got {type(name).__name__}")
        if len(name) > MAX_NAME or not _NAME_RE.match(name):
            raise BadField(
                field,
                f"name {show(name)} must be dotted parts of letters, digits and '_' "
                f"(at most {MAX_NAME} characters)",
            )
        if name in taken:
            raise BadField(field, f"name {name!r} is used twice")
        return name

    def _inputs(self, inputs: object, field: str, what: str, schema: OpSchema) -> list[str]:
        names = _sequence(inputs, field)
        for k, name in enumerate(names):
            if not isinstance(name, str):
                raise BadField(f"{field}[{k}]", f"expected a value name, got {show(name)}")
            if name not in self.values:
                raise BadField(
                    f"{field}[{k}]", f"{what} reads {show(name)}, which no earlier node defines"
                )
        problem = schema.input_count_problem(len(names))
        if problem:
            raise BadField(field, f"{what} {problem}")
        return list(names)

    def _attrs(self, attributes: object, field: str, what: str, schema: OpSchema) -> dict[str, Any]:
        if not isinstance(attributes, dict):
            raise BadField(field, f"expected a dict, got {type(attributes).__name__}")
        decoded: dict[str, Any] = {}
        for key, value in attributes.items():
            spec = schema.attributes.get(key) if isinstance(key, str) else None
            if spec is None:
                known = ", ".join(schema.attributes) or "none"
                raise BadField(
                    field, f"{what} has no attribute {show(key)} (its attributes: {known})"
                )
            where = f"{field}[{key!r}]"
            _plain(value, where, 0, self.budget)
            decoded[key] = decode_value(value)
            _attr_kind(decoded[key], spec, where, what, key)
        for key, spec in schema.attributes.items():
            if spec.required and key not in decoded:
                raise BadField(field, f"{what} lacks its required attribute {key!r}")
        ref = decoded.get("ref")
        if schema.name in ("parameter", "constant") and ref is not None:
            problem = ref_problem(ref)
            if problem:
                raise BadField(f"{field}['ref']", problem)
            if ref not in self.tensors:
                raise BadField(f"{field}['ref']", f"{what} reads tensor {ref!r}, not in tensors")
        return decoded

    def _input_index(self, index: int, field: str, what: str) -> None:
        if not 0 <= index < MAX_ITEMS:
            raise BadField(f"{field}['index']", f"{what} has input index {index}")
        if index in self.input_indices:
            raise BadField(
                f"{field}['index']",
                f"{what} and {self.input_indices[index]!r} are both input {index}",
            )
        self.input_indices[index] = what

    # -- outputs ------------------------------------------------------------------------

    def _output(self, output: object, field: str, op: str, attributes: Mapping[str, Any]) -> None:
        _keys(output, field, OUTPUT_KEYS)
        assert isinstance(output, dict)
        name = self._new_name(output["name"], f"{field}.name", self.values)
        dtype, shape = _type(output["type"], f"{field}.type")
        ref = attributes.get("ref")
        if op in ("parameter", "constant") and ref is not None:
            tensor = self.tensors[ref]
            if dtype is not None and dtype != tensor.dtype:
                raise BadField(
                    f"{field}.type", f"type says {dtype}, tensor {ref!r} is {tensor.dtype}"
                )
            if shape is not None and shape != tuple(tensor.shape):
                raise BadField(
                    f"{field}.type",
                    f"shape {list(shape)} disagrees with tensor {ref!r} {list(tensor.shape)}",
                )
        if output["quant"] is not None:
            _quant(output["quant"], f"{field}.quant", shape)
        self.values.add(name)


# -- field checks -------------------------------------------------------------------------


def _keys(entry: object, field: str, expected: Sequence[str], optional: Sequence[str] = ()) -> None:
    if not isinstance(entry, dict):
        raise BadField(field, f"expected a dict, got {type(entry).__name__}")
    for key in expected:
        if key not in entry:
            raise BadField(field, f"missing key {key!r}")
    for key in entry:
        if key not in expected and key not in optional:
            raise BadField(field, f"unexpected key {show(key)}")


def _sequence(items: object, field: str) -> Sequence[Any]:
    if not isinstance(items, list | tuple):
        raise BadField(field, f"expected a list, got {type(items).__name__}")
    if len(items) > MAX_ITEMS:
        raise BadField(field, f"{len(items)} items, at most {MAX_ITEMS}")
    return items


def _text(text: object, field: str) -> str:
    if not isinstance(text, str):
        raise BadField(field, f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise BadField(field, f"{len(text)} characters, at most {MAX_TEXT}")
    if _CONTROL_RE.search(text):
        raise BadField(field, f"{show(text)} holds control characters")
    return text


def _path_text(text: object, field: str) -> None:
    path = _text(text, field)
    if "\\" in path or any(part in (".", "..") for part in path.split("/")):
        raise BadField(field, f"subgraph path {show(path)} holds '.', '..' or '\\' parts")


def _tensor(tensor: object, field: str) -> None:
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise BadField(field, f"expected a tensor, got {type(tensor).__name__}")
    assert isinstance(tensor, torch.Tensor)
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type != "cpu":
        raise BadField(field, "only dense CPU tensors can be held by a graph")
    if tensor.numel() > MAX_ELEMENTS:
        raise BadField(field, f"{tensor.numel()} elements, at most {MAX_ELEMENTS}")
    size = tensor.numel() * tensor.element_size()
    if size > tensor.untyped_storage().nbytes() and size > MAX_EXPANDED_BYTES:
        raise BadField(
            field,
            f"shape {list(tensor.shape)} expands {tensor.untyped_storage().nbytes()} bytes of "
            f"data to {size} bytes; expanded tensors are limited to {MAX_EXPANDED_BYTES} bytes",
        )


def _dtype(name: object, field: str) -> torch.dtype:
    if not isinstance(name, str) or name not in known_dtypes():
        raise BadField(field, f"unknown dtype {show(name)}")
    return known_dtypes()[name]


def _type(data: object, field: str) -> tuple[torch.dtype | None, tuple[Any, ...] | None]:
    _keys(data, field, TYPE_KEYS)
    assert isinstance(data, dict)
    dtype = None if data["dtype"] is None else _dtype(data["dtype"], f"{field}.dtype")
    if data["shape"] is None:
        return dtype, None
    dims = data["shape"]
    if not isinstance(dims, list | tuple) or len(dims) > MAX_RANK:
        raise BadField(f"{field}.shape", f"expected a list of at most {MAX_RANK} dimensions")
    elements = 1
    for dim in dims:
        if isinstance(dim, str) and _SYMBOL_RE.match(dim):
            continue
        if type(dim) is not int or not 0 <= dim <= MAX_ELEMENTS:
            raise BadField(
                f"{field}.shape",
                f"dimension {show(dim)} is neither a size in 0..{MAX_ELEMENTS} nor a symbol name",
            )
        elements *= dim
    if elements > MAX_ELEMENTS:
        raise BadField(f"{field}.shape", f"{elements} elements, at most {MAX_ELEMENTS}")
    return dtype, tuple(dims)


def _quant(data: object, field: str, shape: tuple[Any, ...] | None) -> None:
    _keys(data, field, QUANT_KEYS, OPTIONAL_QUANT_KEYS)
    assert isinstance(data, dict)
    block = data.get("block_size")
    if block is not None and (type(block) is not int or not 1 <= block <= MAX_ELEMENTS):
        raise BadField(f"{field}.block_size", f"expected None or a size >= 1, got {show(block)}")
    for key in ("signed", "symmetric", "skip"):
        if type(data[key]) is not bool:
            raise BadField(f"{field}.{key}", f"expected True or False, got {show(data[key])}")
    if type(data["bits"]) is not int or not 2 <= data["bits"] <= 16:
        raise BadField(f"{field}.bits", f"bits must be an int in 2..16, got {show(data['bits'])}")
    granularities = [g.value for g in Granularity]
    if data["granularity"] not in granularities:
        raise BadField(
            f"{field}.granularity",
            f"expected one of {granularities}, got {show(data['granularity'])}",
        )
    axis = data["axis"]
    if axis is not None and (type(axis) is not int or not -MAX_RANK <= axis < MAX_RANK):
        raise BadField(f"{field}.axis", f"expected None or a dimension index, got {show(axis)}")
    _numbers(data["scale"], f"{field}.scale", (int, float))
    _numbers(data["zero_point"], f"{field}.zero_point", (int,))
    _text(data["reason"], f"{field}.reason")
    spec = QuantSpec(**{**data, "granularity": Granularity(data["granularity"]), "skip": False})
    rank = None if shape is None else len(shape)
    channels = None
    if spec.granularity is Granularity.PER_CHANNEL and axis is not None and shape:
        dim = shape[axis] if -len(shape) <= axis < len(shape) else None
        channels = dim if type(dim) is int else None
    problems = spec.problems(rank, channels)
    if problems:
        raise BadField(field, problems[0])


def _numbers(values: object, field: str, kinds: tuple[type, ...]) -> None:
    if values is None:
        return
    items = _sequence(values, field)
    for v in items:
        if type(v) not in kinds or (type(v) is int and abs(v) > 1 << 31):
            raise BadField(field, f"expected numbers, got {show(v)}")
        if type(v) is float and not math.isfinite(v):
            raise BadField(field, f"{v} is not finite")


def _plain(value: object, field: str, depth: int, budget: list[int]) -> None:
    """Check that an attribute value is plain data: what the encoder writes, bounded.

    ``budget`` holds how many more items the file's attribute values may have in all.
    """
    if depth > MAX_DEPTH:
        raise BadField(field, f"nested deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise BadField(
            field, f"the attribute values hold more than {MAX_ATTRIBUTE_ITEMS} items in all"
        )
    if value is None or type(value) in (bool, float, complex):
        return
    if type(value) is int:
        if abs(value) > 1 << 64:
            raise BadField(field, f"integer {show(value)} is out of range")
        return
    if type(value) is str:
        if len(value) > MAX_TEXT:
            raise BadField(field, f"a string of {len(value)} characters, at most {MAX_TEXT}")
        return
    if isinstance(value, list | tuple):
        for item in _sequence(value, field):
            _plain(item, field, depth + 1, budget)
        return
    if isinstance(value, dict):
        if DTYPE_MARK in value:
            if len(value) != 1:
                raise BadField(field, f"a dtype entry holds only {DTYPE_MARK!r}")
            _dtype(value[DTYPE_MARK], field)
            return
        if len(value) > MAX_ITEMS:
            raise BadField(field, f"{len(value)} items, at most {MAX_ITEMS}")
        for key, item in value.items():
            if type(key) not in (str, int) or (type(key) is str and len(key) > MAX_NAME):
                raise BadField(
                    field, f"a dict key must be a short string or an int, got {show(key)}"
                )
            _plain(item, field, depth + 1, budget)
        return
    raise BadField(field, f"an attribute cannot hold a {type(value).__name__}")


def _attr_kind(value: object, spec: AttrSpec, field: str, what: str, key: str) -> None:
    if not spec.accepts(value):
        raise BadField(field, f"{what}: attribute {key!r} must be {spec.kind}, got {show(value)}")
    if spec.kind == "dtype" and value is not None:
        _dtype(value, field)


def _structure(structure: object, count: int, field: str, depth: int) -> None:
    """Check the output node's ``structure``: int leaves index its ``count`` inputs."""
    where = f"{field}['structure']"
    if structure is None and depth == 0:
        return
    if depth > MAX_DEPTH:
        raise BadField(where, f"nested deeper than {MAX_DEPTH} levels")
    if type(structure) is int:
        if not 0 <= structure < count:
            raise BadField(where, f"result {structure} of {count} results")
        return
    if not isinstance(structure, tuple) or len(structure) != 2:
        raise BadField(where, f"malformed output structure {show(structure)}")
    kind, items = structure
    if kind == "const":
        return
    if kind not in ("tuple", "list", "dict") or not isinstance(items, tuple | list):
        raise BadField(where, f"malformed output structure {show(structure)}")
    for item in items:
        if kind == "dict":
            if not isinstance(item, tuple) or len(item) != 2 or type(item[0]) not in (str, int):
                raise BadField(where, f"a dict entry must be (key, item), got {show(item)}")
            item = item[1]
        _structure(item, count, field, depth + 1)
