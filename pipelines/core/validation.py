"""Validate plain mappings into typed options with pydantic, failing with one line naming the key.

Every typed settings class in shardtrain (the config sections, each dataset's options,
the readers' and feature extractors' options) is validated here, so every bad value
reads the same way: ``config key 'model.dropout': must be >= 0 and < 1, got 1.5``.
Pydantic's own multi-line report never reaches a user. Values are validated in JSON
mode and strictly: YAML already typed them, so ``"3"`` is not an integer and ``1`` is
not ``true``, while a list still fills a tuple field and an integer a float field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, TypeAdapter, ValidationError

from shardtrain.core.errors import ShardtrainError

# pydantic names union members and wrapped validators in ``loc``; they are not keys.
_TYPE_LOCS = {"int", "float", "str", "bool", "none", "list", "tuple", "dict"}


def in_range(ge: float | None = None, gt: float | None = None, le: float | None = None,
             lt: float | None = None) -> AfterValidator:
    """A pydantic validator for a numeric range whose message states the whole range.

    ``Annotated[float, in_range(ge=0, lt=1)]`` fails as ``must be >= 0 and < 1``
    (pydantic's own ``Field(ge=..)`` would only name the bound that failed).
    """
    parts = [(op, bound) for op, bound in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if bound is not None]
    text = "must be " + " and ".join(f"{op} {bound:g}" for op, bound in parts)
    tests = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b}

    def check(value: Any) -> Any:
        if not all(tests[op](value, bound) for op, bound in parts):
            raise ValueError(text)
        return value

    return AfterValidator(check)


PositiveInt = Annotated[int, in_range(ge=1)]
NonNegativeInt = Annotated[int, in_range(ge=0)]
PositiveFloat = Annotated[float, in_range(gt=0)]
NonNegativeFloat = Annotated[float, in_range(ge=0)]
Fraction = Annotated[float, in_range(ge=0, le=1)]


def _plain(value: Any) -> Any:
    """JSON-able form of a value for validation (tuples as lists, models as mappings)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def field_names(cls: Any) -> list[str]:
    """The keys a settings class accepts (pydantic model or dataclass)."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return []


def _unwrap(tp: Any, node: Any) -> Any:
    """The settings class an annotation holds for raw value ``node`` (Annotated, Optional, tagged unions)."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [_unwrap(a, node) for a in typing.get_args(tp) if a is not type(None)]
        classes = [m for m in members if field_names(m)]
        for cls in classes:
            tag = getattr(cls, "TAG", None)  # (field, value, default) of a tagged union member
            if tag and isinstance(node, dict) and node.get(tag[0], tag[2]) == tag[1]:
                return cls
        return classes[0] if len(classes) == 1 else None
    return tp


def class_at(root: Any, path: list[str], raw: Any) -> Any:
    """The settings class at dotted ``path`` below ``root`` for the raw mapping ``raw``."""
    cls, node = root, raw
    for part in path:
        if isinstance(cls, type) and issubclass(cls, BaseModel) and part in cls.model_fields:
            tp = cls.model_fields[part].annotation
        elif dataclasses.is_dataclass(cls) and part in field_names(cls):
            tp = typing.get_type_hints(cls, include_extras=True)[part]
        else:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        cls = _unwrap(tp, node)
    return cls


def _key_path(loc: tuple[Any, ...], raw: Any) -> list[str]:
    """Dotted-key parts of a pydantic ``loc``: union tags and member type names dropped, indexes as [i]."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and item in node:
            parts.append(item)
            node = node[item]
        elif item in _TYPE_LOCS or not item.isidentifier():
            continue  # a union member's name or tag (``kind=mlp``), not a key
        else:
            parts.append(item)
            node = None
    return parts


def _join(prefix: str, parts: list[str]) -> str:
    """``a.b[0].c`` from a prefix and key parts."""
    out = prefix
    for p in parts:
        out = f"{out}{p}" if p.startswith("[") or not out else f"{out}.{p}"
    return out


def _describe(err: dict[str, Any]) -> str:
    """What was wrong with one value, as a phrase (``expected an integer, got 'x'``)."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    expected = {
        "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
        "float_type": "a number", "float_parsing": "a number", "bool_type": "true/false",
        "bool_parsing": "true/false", "string_type": "a string", "list_type": "a list",
        "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
        "dataclass_type": "a mapping", "model_attributes_type": "a mapping", "none_required": "null",
    }
    if kind in expected:
        return f"expected {expected[kind]}, got {value!r}"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "bad_tag":
        tag = value.get(ctx["field"]) if isinstance(value, dict) else value
        return f"{tag!r} is not one of {ctx.get('expected_tags')}"
    if kind in ("too_short", "too_long"):
        return f"expected {ctx.get('min_length', ctx.get('max_length'))} values, got {value!r}"
    if kind == "value_error":
        return f"{str(err['msg']).removeprefix('Value error, ')}, got {value!r}"
    if kind == "missing":
        return "is required"
    return f"{err['msg']}, got {value!r}".replace("\n", " ")


def translate(exc: ValidationError, root: Any, raw: Any, prefix: str = "") -> ShardtrainError:
    """One ShardtrainError line for pydantic's first error: the dotted key, the value, what is allowed."""
    err = exc.errors(include_url=False)[0]
    parts = _key_path(err["loc"], raw)
    if err["type"] == "bad_tag":  # reported on the section; name its tag key
        if not isinstance(err.get("input"), dict):
            return ShardtrainError(f"config key '{_join(prefix, parts)}': expected a mapping, got {err.get('input')!r}")
        parts.append(err["ctx"]["field"])
    if err["type"] == "missing" and parts and parts[-1].startswith("["):  # a fixed-length list was too short
        return ShardtrainError(f"config key '{_join(prefix, parts[:-1])}': too few values (missing item {parts[-1]})")
    key = _join(prefix, parts)
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = field_names(class_at(root, [p for p in parts[:-1] if not p.startswith("[")], raw))
        close = difflib.get_close_matches(parts[-1], allowed, n=1)
        hint = f" (did you mean '{_join(prefix, parts[:-1] + close)}'?)" if close else ""
        return ShardtrainError(f"unknown config key '{key}'{hint}; allowed here: {', '.join(allowed)}")
    return ShardtrainError(f"config key '{key}': {_describe(err)}")


def validate(cls: Any, data: Any, prefix: str = "") -> Any:
    """Validate plain ``data`` into ``cls`` (a pydantic model, dataclass or type), or raise one line.

    ``prefix`` is the dotted key ``data`` sits at (``dataset.options``), used in messages.
    """
    raw = _plain(data)
    try:
        return TypeAdapter(cls).validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as exc:
        raise translate(exc, cls, raw, prefix) from None



def tagged_union(field: str, members: dict[str, type], default: str | None = None) -> Any:
    """One union of settings classes told apart by ``field`` (``kind``, ``name``), as a pydantic type.

    ``members`` maps each tag value to its class; ``default`` is the tag when the field
    is omitted. Errors then report the tag's own key (``model.kind``) and the member's
    keys, and unknown keys list only the chosen member's fields.
    """
    from pydantic import Discriminator, Tag

    def tag_of(value: Any) -> str | None:
        tag = value.get(field, default) if isinstance(value, dict) else getattr(value, field, default)
        return f"{field}={tag}" if tag in members else None  # None: pydantic reports union_tag_not_found

    for value, cls in members.items():
        cls.TAG = (field, value, default)
    union = Union[tuple(Annotated[cls, Tag(f"{field}={value}")] for value, cls in members.items())]
    return Annotated[union, Discriminator(tag_of, custom_error_type="bad_tag", custom_error_message=f"unknown {field}",
                                          custom_error_context={"field": field,
                                                                "expected_tags": ", ".join(map(repr, members))})]
