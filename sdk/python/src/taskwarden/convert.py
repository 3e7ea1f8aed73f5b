"""Payloads and results, from and to the handler's annotated types, and the JSON Schema of a
handler's payload.

A task's payload is a JSON object of the handler's parameters after ``ctx``, by name. The worker
converts each value to its annotation (a payload that does not fit fails the task permanently:
a retry would not make it fit), the client converts results back to the handler's return
annotation, and the worker registers the JSON Schema derived from the same annotations so the
server refuses a misfit at submit time already.

Supported: ``Any``, ``None``, ``bool``, ``int``, ``float``, ``str``, ``datetime``, ``date``,
``UUID``, ``Enum``, ``Literal``, unions and ``Optional``, ``list``/``tuple``/``set``/``Sequence``,
``dict``/``Mapping`` with string keys, dataclasses, ``TypedDict`` and, when installed, pydantic v2
models (validated by pydantic itself).
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import dataclasses
import enum
import inspect
import types
import typing
import uuid
from datetime import date, datetime
from typing import Any, Literal, Union

from .errors import ConversionError
from .workflow import FanOut

try:  # pydantic is optional: used when installed
    import pydantic as _pydantic

    _BaseModel: type[Any] | None = _pydantic.BaseModel
    _ValidationError: type[Exception] = _pydantic.ValidationError
except ImportError:  # pragma: no cover - exercised only without pydantic
    _BaseModel = None
    _ValidationError = Exception

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_MISSING = inspect.Parameter.empty


def is_pydantic_model(tp: Any) -> bool:
    return _BaseModel is not None and isinstance(tp, type) and issubclass(tp, _BaseModel)


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing.is_typeddict(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _describe(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, (int, float)):
        return "a number"
    if isinstance(data, str):
        return "a string"
    if isinstance(data, list):
        return "an array"
    if isinstance(data, dict):
        return "an object"
    return type(data).__name__


def _unwrap(tp: Any) -> Any:
    """``Annotated[T, ...]`` and ``NewType`` are their underlying type here."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        else:
            return tp


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


# --- to JSON ---------------------------------------------------------------------------------


def to_json(value: Any, path: str = "value") -> Any:
    """A value as JSON-ready data: dataclasses, pydantic models, enums, dates and containers
    become objects, arrays and strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConversionError(path, f"{value} cannot be sent as JSON")
        return value
    if _BaseModel is not None and isinstance(value, _BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, FanOut):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name), f"{path}.{f.name}")
            for f in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return to_json(value.value, path)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, cabc.Mapping):
        out = {}
        for k, v in value.items():
            key = k.value if isinstance(k, enum.Enum) else k
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ConversionError(path, f"object keys must be strings, not {type(k).__name__}")
            out[str(key)] = to_json(v, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ConversionError(path, f"a {type(value).__name__} cannot be sent as JSON")


# --- from JSON -------------------------------------------------------------------------------


def from_json(data: Any, tp: Any, path: str = "value") -> Any:
    """``data`` (parsed JSON) converted to ``tp``, or ``ConversionError`` naming where it does
    not fit."""
    tp = _unwrap(tp)
    if tp is Any or tp is object or tp is _MISSING:
        return data
    if tp is None or tp is type(None):
        if data is not None:
            raise ConversionError(path, f"expected null, got {_describe(data)}")
        return None
    origin = typing.get_origin(tp)
    if origin is not None:
        return _from_generic(data, tp, origin, path)
    if isinstance(tp, typing.TypeVar):
        return data
    if not isinstance(tp, type):
        raise ConversionError(path, f"unsupported annotation {tp!r}")
    if tp is bool:
        if not isinstance(data, bool):
            raise ConversionError(path, f"expected a boolean, got {_describe(data)}")
        return data
    if tp is int:
        if isinstance(data, float) and data.is_integer():
            return int(data)
        if not isinstance(data, int) or isinstance(data, bool):
            raise ConversionError(path, f"expected an integer, got {_describe(data)}")
        return data
    if tp is float:
        if not isinstance(data, (int, float)) or isinstance(data, bool):
            raise ConversionError(path, f"expected a number, got {_describe(data)}")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise ConversionError(path, f"expected a string, got {_describe(data)}")
        return data
    if is_pydantic_model(tp):
        return _from_pydantic(data, tp, path)
    if dataclasses.is_dataclass(tp):
        return _from_dataclass(data, tp, path)
    if _is_typeddict(tp):
        return _from_typeddict(data, tp, path)
    if issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ConversionError(path, f"expected one of {allowed}, got {data!r}") from None
    if tp is datetime or tp is date:
        if not isinstance(data, str):
            raise ConversionError(path, f"expected a date string, got {_describe(data)}")
        try:
            text = data[:-1] + "+00:00" if data.endswith(("Z", "z")) else data
            return datetime.fromisoformat(text) if tp is datetime else date.fromisoformat(text)
        except ValueError as e:
            raise ConversionError(path, str(e)) from None
    if tp is uuid.UUID:
        try:
            return uuid.UUID(str(data))
        except ValueError:
            raise ConversionError(path, f"expected a UUID, got {data!r}") from None
    if tp in (list, tuple, set, frozenset, dict):
        return from_json(data, tp[Any], path)
    raise ConversionError(path, f"unsupported type {_type_name(tp)}")


def _from_generic(data: Any, tp: Any, origin: Any, path: str) -> Any:
    args = typing.get_args(tp)
    if _is_union(origin):
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_json(data, arg, path)
            except ConversionError as e:
                errors.append(e.reason)
        raise ConversionError(path, "fits none of the union: " + "; ".join(errors))
    if origin is Literal:
        for allowed in args:
            if data == allowed and type(data) is type(allowed):
                return allowed
        raise ConversionError(path, f"expected one of {', '.join(map(repr, args))}, got {data!r}")
    if origin in (list, set, frozenset, cabc.Sequence, cabc.Set, cabc.Iterable, cabc.Collection):
        if not isinstance(data, list):
            raise ConversionError(path, f"expected an array, got {_describe(data)}")
        item = args[0] if args else Any
        items = [from_json(v, item, f"{path}[{i}]") for i, v in enumerate(data)]
        if origin in (set, cabc.Set):
            return set(items)
        if origin is frozenset:
            return frozenset(items)
        return items
    if origin is tuple:
        if not isinstance(data, list):
            raise ConversionError(path, f"expected an array, got {_describe(data)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0], f"{path}[{i}]") for i, v in enumerate(data))
        if len(data) != len(args):
            raise ConversionError(path, f"expected {len(args)} items, got {len(data)}")
        return tuple(
            from_json(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(data, args, strict=True))
        )
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        if not isinstance(data, dict):
            raise ConversionError(path, f"expected an object, got {_describe(data)}")
        key_tp, value_tp = args if args else (str, Any)
        return {
            from_json(_key(k, key_tp, path), key_tp, path): from_json(v, value_tp, f"{path}.{k}")
            for k, v in data.items()
        }
    if origin is type:
        raise ConversionError(path, "a type cannot come from JSON")
    # A parametrised user generic (a dataclass[T], say): convert as its plain class.
    return from_json(data, origin, path)


def _key(key: str, key_tp: Any, path: str) -> Any:
    """JSON keys are strings; an ``int`` or enum key type reads them back."""
    key_tp = _unwrap(key_tp)
    if key_tp is int:
        try:
            return int(key)
        except ValueError:
            raise ConversionError(path, f"key {key!r} is not an integer") from None
    return key


def _hints(tp: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp)
    except NameError as e:
        raise ConversionError(
            _type_name(tp), f"its annotations cannot be resolved ({e}); define it at module level"
        ) from None


def _from_dataclass(data: Any, tp: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConversionError(path, f"expected an object, got {_describe(data)}")
    hints = _hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConversionError(f"{path}.{unknown[0]}", f"not a field of {tp.__name__}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = from_json(data[name], hints.get(name, Any), f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConversionError(f"{path}.{name}", "required")
    return tp(**kwargs)


def _from_typeddict(data: Any, tp: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConversionError(path, f"expected an object, got {_describe(data)}")
    hints = _hints(tp)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConversionError(f"{path}.{unknown[0]}", f"not a key of {tp.__name__}")
    for key in sorted(tp.__required_keys__):
        if key not in data:
            raise ConversionError(f"{path}.{key}", "required")
    return {k: from_json(v, hints[k], f"{path}.{k}") for k, v in data.items()}


def _from_pydantic(data: Any, tp: Any, path: str) -> Any:
    try:
        return tp.model_validate(data)
    except _ValidationError as e:
        first = e.errors()[0]  # type: ignore[attr-defined]
        where = path
        for part in first.get("loc", ()):
            where += f"[{part}]" if isinstance(part, int) else f".{part}"
        raise ConversionError(where, str(first.get("msg", e))) from None


# --- JSON Schema -----------------------------------------------------------------------------


class SchemaBuilder:
    """Builds JSON Schemas, collecting named types (dataclasses, TypedDicts, pydantic models)
    under ``$defs`` so that each is written once and recursive types work."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self._names: dict[Any, str] = {}

    def schema(self, tp: Any) -> dict[str, Any]:
        tp = _unwrap(tp)
        if tp is Any or tp is object or tp is _MISSING or isinstance(tp, typing.TypeVar):
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        origin = typing.get_origin(tp)
        if origin is not None:
            return self._generic(tp, origin)
        simple = {
            bool: {"type": "boolean"},
            int: {"type": "integer"},
            float: {"type": "number"},
            str: {"type": "string"},
            datetime: {"type": "string", "format": "date-time"},
            date: {"type": "string", "format": "date"},
            uuid.UUID: {"type": "string", "format": "uuid"},
            list: {"type": "array"},
            tuple: {"type": "array"},
            set: {"type": "array"},
            frozenset: {"type": "array"},
            dict: {"type": "object"},
        }
        if tp in simple:
            return dict(simple[tp])
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [to_json(m.value) for m in tp]}
        if is_pydantic_model(tp) or dataclasses.is_dataclass(tp) or _is_typeddict(tp):
            return {"$ref": f"#/$defs/{self._define(tp)}"}
        raise ConversionError(_type_name(tp), "no JSON Schema for this type")

    def _generic(self, tp: Any, origin: Any) -> dict[str, Any]:
        args = typing.get_args(tp)
        if _is_union(origin):
            return {"anyOf": [self.schema(a) for a in args]}
        if origin is Literal:
            return {"enum": [to_json(a) for a in args]}
        if origin in (
            list,
            set,
            frozenset,
            cabc.Sequence,
            cabc.Set,
            cabc.Iterable,
            cabc.Collection,
        ):
            return {"type": "array", "items": self.schema(args[0])} if args else {"type": "array"}
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.schema(args[0])}
            return {
                "type": "array",
                "prefixItems": [self.schema(a) for a in args],
                "items": False,
                "minItems": len(args),
            }
        if origin in (dict, cabc.Mapping, cabc.MutableMapping):
            if not args:
                return {"type": "object"}
            return {"type": "object", "additionalProperties": self.schema(args[1])}
        return self.schema(origin)

    def _define(self, tp: Any) -> str:
        if tp in self._names:
            return self._names[tp]
        name: str = tp.__name__
        n = 2
        while name in self.defs:
            name = f"{tp.__name__}{n}"
            n += 1
        self._names[tp] = name
        self.defs[name] = {}  # a placeholder, so that a recursive reference finds the name
        if is_pydantic_model(tp):
            schema = tp.model_json_schema(ref_template="#/$defs/{model}")
            for sub, sub_schema in schema.pop("$defs", {}).items():
                self.defs.setdefault(sub, sub_schema)
            self.defs[name] = schema
            return name
        hints = _hints(tp)
        properties: dict[str, Any] = {}
        required: list[str] = []
        if dataclasses.is_dataclass(tp):
            for f in dataclasses.fields(tp):
                if not f.init:
                    continue
                properties[f.name] = self.schema(hints.get(f.name, Any))
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
        else:
            for key, hint in hints.items():
                properties[key] = self.schema(hint)
            required = sorted(tp.__required_keys__)
        schema = {
            "type": "object",
            "title": tp.__name__,
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            schema["required"] = required
        self.defs[name] = schema
        return name


def json_schema(tp: Any) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) for values of ``tp``."""
    builder = SchemaBuilder()
    schema = builder.schema(tp)
    if builder.defs:
        schema["$defs"] = builder.defs
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


# --- a handler's signature -------------------------------------------------------------------


class Signature:
    """A handler's payload parameters (those after ``ctx``) and its result type, resolved from
    its annotations the first time they are needed (so a type defined further down the module
    is fine)."""

    def __init__(self, fn: cabc.Callable[..., Any]) -> None:
        self.fn = fn
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"task handler {fn.__qualname__} must take the Context as its first parameter"
            )
        self._all = params
        rest = params[1:]
        for p in rest:
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
                raise TypeError(
                    f"task handler {fn.__qualname__}: parameter {p.name!r} must be nameable "
                    "(the payload is an object of the parameters by name)"
                )
        self.params = [p for p in rest if p.kind is not inspect.Parameter.VAR_KEYWORD]
        self.extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest)
        self._bind = inspect.Signature(rest)
        self._hints: dict[str, Any] | None = None

    @property
    def hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except NameError as e:
                raise TypeError(
                    f"task handler {self.fn.__qualname__}: an annotation cannot be resolved ({e})"
                ) from None
        return self._hints

    @property
    def result_type(self) -> Any:
        """The result's type; for a handler returning ``FanOut[R]``, ``R`` (the join's result
        stands in for the task's)."""
        tp = self.hints.get("return", Any)
        if typing.get_origin(tp) is FanOut:
            args = typing.get_args(tp)
            return args[0] if args else Any
        if tp is FanOut:
            return Any
        return tp

    def payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The payload object for a call with these arguments (as the handler would take them,
        after ``ctx``); checked against the signature, values made JSON."""
        try:
            bound = self._bind.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.fn.__qualname__}: {e}") from None
        payload: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            param = self._bind.parameters[name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                payload.update({k: to_json(v, f"payload.{k}") for k, v in value.items()})
            else:
                payload[name] = to_json(value, f"payload.{name}")
        return payload

    def decode(self, payload: Any) -> dict[str, Any]:
        """Keyword arguments for the handler from a task's payload, or ``ConversionError``."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ConversionError("payload", f"expected an object, got {_describe(payload)}")
        hints = self.hints
        kwargs: dict[str, Any] = {}
        for p in self.params:
            if p.name in payload:
                kwargs[p.name] = from_json(
                    payload[p.name], hints.get(p.name, Any), f"payload.{p.name}"
                )
            elif p.default is _MISSING:
                raise ConversionError(f"payload.{p.name}", "required")
        known = {p.name for p in self.params}
        unknown = sorted(k for k in payload if k not in known)
        if unknown and not self.extra:
            raise ConversionError(f"payload.{unknown[0]}", "not a parameter of the handler")
        for key in unknown:
            kwargs[key] = payload[key]
        return kwargs

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the payload object, as registered with the server."""
        builder = SchemaBuilder()
        hints = self.hints
        properties: dict[str, Any] = {}
        required: list[str] = []
        for p in self.params:
            prop = builder.schema(hints.get(p.name, Any))
            if p.default is not _MISSING:
                with contextlib.suppress(ConversionError):
                    prop = {**prop, "default": to_json(p.default)}
            else:
                required.append(p.name)
            properties[p.name] = prop
        schema: dict[str, Any] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": properties,
        }
        if required:
            schema["required"] = required
        if not self.extra:
            schema["additionalProperties"] = False
        if builder.defs:
            schema["$defs"] = builder.defs
        return schema

    def encode_result(self, value: Any) -> Any:
        return to_json(value, "result")

    def decode_result(self, data: Any) -> Any:
        return from_json(data, self.result_type, "result")
