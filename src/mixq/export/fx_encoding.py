"""The fx graph of an integer model as JSON, and back, with nothing read ever run as code.

:func:`encode_node` writes a node as ``name``, ``op``, ``target`` and ``args``/``kwargs``
(``{"node": name}`` refers to an earlier node; ``{"tuple": [...]}``, ``{"list": [...]}``,
``{"slice": [a, b, c]}``, ``{"ellipsis": true}`` and ``{"dtype": name}`` tag the other
non-JSON values). :func:`decode_graph` rebuilds the graph: function targets come from a
fixed table (the ops of :mod:`mixq.integer.supported`, named ``module.name``), never
imported by name; node, input, keyword and module names must be plain identifiers, since
torch.fx writes them into the Python source it generates; ``getattr`` reads only
``shape``/``dtype``/``ndim``. Errors are :class:`~mixq.errors.PackedFormatError`.

>>> import torch, torch.fx as fx
>>> graph = fx.symbolic_trace(lambda x: torch.flatten(x, 1)).graph
>>> [encode_node(n)["target"] for n in graph.nodes]
['x', 'torch.flatten', 'output']
>>> rebuilt = decode_graph([encode_node(n) for n in graph.nodes], modules=())
>>> fx.GraphModule(torch.nn.Module(), rebuilt)(torch.ones(2, 3, 4)).shape
torch.Size([2, 12])
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Collection
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from mixq.errors import PackedFormatError
from mixq.integer.supported import (
    ADD_FUNCTIONS,
    CAT_FUNCTIONS,
    CLAMP_FUNCTIONS,
    CLAMP_METHODS,
    RELU6_FUNCTIONS,
    RELU_FUNCTIONS,
    SHAPE_FUNCTIONS,
    SHAPE_METHODS,
)

# The functions and methods the integer graph holds (the builder copies the source model's
# shape, clamp, pad and cat calls; it emits torch.clamp and torch.cat itself): the one
# definition in mixq.integer.supported, named by module and name. A file names only these.
_COPIED_FUNCTIONS = (
    *RELU_FUNCTIONS,
    *RELU6_FUNCTIONS,
    *CLAMP_FUNCTIONS,
    *ADD_FUNCTIONS,
    *CAT_FUNCTIONS,
    *SHAPE_FUNCTIONS,
    F.pad,
)
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    f"{f.__module__.removeprefix('_')}.{f.__name__}": f for f in _COPIED_FUNCTIONS
}
_METHODS = SHAPE_METHODS | CLAMP_METHODS | {"add"}
_OPS = frozenset({"placeholder", "call_module", "call_function", "call_method", "output"})
# torch.fx writes node names, placeholder targets and keyword names into the Python source
# it generates and executes: a name from a file must be a plain identifier, never code.
MAX_NAME = 128
# The attributes ``getattr`` nodes of the compiled graph read (shapes for reshapes).
_ATTRIBUTES = frozenset({"shape", "dtype", "ndim"})


def encode_node(node: fx.Node) -> dict[str, Any]:
    """One fx node as JSON: name, op, target (a table name for functions) and tagged
    arguments; raises for a target outside the tables."""
    if node.op not in _OPS:
        raise PackedFormatError(f"node {node.name}: op {node.op!r} cannot be packed")
    entry: dict[str, Any] = {"name": node.name, "op": node.op, "target": _target_name(node)}
    entry["args"] = [_encode_arg(a) for a in node.args]
    entry["kwargs"] = {k: _encode_arg(v) for k, v in node.kwargs.items()}
    return entry


def _target_name(node: fx.Node) -> str:
    if node.op == "call_function":
        name = next((k for k, f in _FUNCTIONS.items() if f is node.target), None)
        if name is None:
            raise PackedFormatError(f"node {node.name}: function {node.target} cannot be packed")
        return name
    if node.op == "call_method" and node.target not in _METHODS:
        raise PackedFormatError(f"node {node.name}: method {node.target!r} cannot be packed")
    return str(node.target)


def _encode_arg(value: Any) -> Any:
    """A JSON value for an fx argument; tags keep tuples, lists and nodes apart."""
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        tag = "tuple" if isinstance(value, tuple) else "list"
        return {tag: [_encode_arg(v) for v in value]}
    if isinstance(value, slice):
        return {"slice": [_encode_arg(v) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise PackedFormatError(f"argument {value!r} of type {type(value).__name__} cannot be packed")


def decode_graph(nodes: list[Any], modules: Collection[str]) -> fx.Graph:
    """The fx graph of a header's ``nodes``, every name, target and argument checked: only
    identifiers, functions and methods of the fixed tables, modules named in ``modules``,
    references to earlier nodes; nothing in it can become code."""
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for entry in nodes:
        name = field(entry, "name", str)
        try:
            node = _node(graph, entry, env, modules)
        except PackedFormatError as exc:
            raise PackedFormatError(f"node {name!r}: {exc}") from None
        env[name] = node
    return graph


def _node(
    graph: fx.Graph, entry: dict[str, Any], env: dict[str, fx.Node], modules: Collection[str]
) -> fx.Node:
    op, target = field(entry, "op", str), field(entry, "target", str)
    name = _identifier(field(entry, "name", str), "node name")
    if op not in _OPS:
        raise PackedFormatError(f"unknown op {op!r}")
    if name in env:
        raise PackedFormatError(f"node name {name!r} is used twice")
    args = tuple(_decode_arg(a, env) for a in field(entry, "args", list))
    kwargs = {
        _identifier(k, "keyword"): _decode_arg(v, env)
        for k, v in field(entry, "kwargs", dict).items()
    }
    if op == "placeholder":
        if args or kwargs:
            raise PackedFormatError("a placeholder takes no arguments")
        return graph.placeholder(_identifier(target, "input name"))
    if op == "output":
        return graph.output(*args)
    if op == "call_module" and target not in modules:
        raise PackedFormatError(f"calls unknown module {target!r}")
    if op == "call_function":
        if target not in _FUNCTIONS:
            raise PackedFormatError(f"unknown function {target!r}")
        if _FUNCTIONS[target] is getattr:
            _check_getattr(args)
        return graph.create_node(op, _FUNCTIONS[target], args, kwargs, name)
    if op == "call_method" and target not in _METHODS:
        raise PackedFormatError(f"unknown method {target!r}")
    return graph.create_node(op, target, args, kwargs, name)


def _identifier(value: str, what: str) -> str:
    """``value`` if it is a plain Python identifier (no keyword, no dunder), else an error:
    these names end up in the source code torch.fx generates."""
    if (
        not value.isidentifier()
        or not value.isascii()
        or keyword.iskeyword(value)
        or value.startswith("__")
        or len(value) > MAX_NAME
    ):
        raise PackedFormatError(f"{what} {value[:80]!r} is not a plain identifier")
    return value


def _check_getattr(args: tuple[Any, ...]) -> None:
    if len(args) != 2 or not isinstance(args[0], fx.Node) or args[1] not in _ATTRIBUTES:
        shown = args[1] if len(args) == 2 else args
        raise PackedFormatError(f"getattr of {shown!r} is not allowed (only {sorted(_ATTRIBUTES)})")


def _decode_arg(value: Any, env: dict[str, fx.Node]) -> Any:
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise PackedFormatError(f"argument {value!r} is not one tagged value")
    ((tag, body),) = value.items()
    if tag == "node":
        if body not in env:
            raise PackedFormatError(f"refers to {body!r}, which is not an earlier node")
        return env[body]
    if tag in ("tuple", "list", "slice") and isinstance(body, list):
        items = [_decode_arg(v, env) for v in body]
        return tuple(items) if tag == "tuple" else items if tag == "list" else slice(*items)
    if tag == "ellipsis":
        return Ellipsis
    if tag == "dtype" and isinstance(getattr(torch, str(body), None), torch.dtype):
        return getattr(torch, body)
    raise PackedFormatError(f"argument {value!r} is not a known encoding")


def module_name(name: Any) -> str:
    """A module name from a file: letters, digits and underscores (the builder's flattened
    names, ``0_input`` included), no dunder. torch.fx writes it into generated source."""
    if (
        not isinstance(name, str)
        or re.fullmatch(r"[A-Za-z0-9_]+", name) is None
        or name.startswith("__")
        or len(name) > MAX_NAME
    ):
        raise PackedFormatError(f"module name {str(name)[:80]!r} is not a plain identifier")
    return name


def field(entry: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``entry[key]`` if it is of ``kind`` (a bool is not a number), else an error."""
    value = entry.get(key) if isinstance(entry, dict) else None
    # JSON true/false load as bool, a subclass of int: not a number here.
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise PackedFormatError(f"{key!r} is {value!r}, expected {kind}")
    return value
