"""What a kind's params are, read from its params model: names, types, defaults, one-line help
(`sched kinds KIND`), and the closest known name for a mistyped one ("did you mean lr?").

A kind documents each param with a comment on its line (`lr: float = 2e-5  # peak learning
rate`), or the comment lines just above it, or a `Field(description=...)`; the comment is read
from the model's source (the house style: one comment per field), so nothing is written twice.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_FIELD_LINE = re.compile(r"^\s+([A-Za-z_]\w*)\s*:[^#]*?(?:#\s*(.*))?$")  # `    lr: float = 2e-5  # help`
_DICT_ENTRY = re.compile(r"^\s+[\"']([A-Za-z_]\w*)[\"']\s*:[^#]*?(?:#\s*(.*))?$")  # `    "train": (str, X),  # help`
_COMMENT_LINE = re.compile(r"^\s+#\s?(.*)$")


def harvest(source: str) -> dict[str, str]:
    """{name: comment} of every field-like line of `source` (a class body's `name: type = x  # help`,
    or a create_model dict's `"name": (type, x),  # help`), the comment on its line or the comment
    lines just above it. The first one found for a name wins."""
    found: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if match := _COMMENT_LINE.match(line):
            above.append(match.group(1).strip())
            continue
        if not stripped.startswith(("def ", "@", "return", "if ", "for ", "elif ", "while ")) and (
                match := _FIELD_LINE.match(line) or _DICT_ENTRY.match(line)):
            name, trailing = match.group(1), (match.group(2) or "").strip()
            text = trailing or " ".join(above)
            if text and name not in found:
                found[name] = text
        above = []
    return found


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def sources_of(kind) -> list[str]:
    """Where a kind's params are documented, most specific first: its params model's classes, the
    module that defines the kind, and the modules of the classes that module uses (a params model
    built from a pipeline config takes that config's comments)."""
    texts = _class_sources(kind.params_model)
    module = sys.modules.get(getattr(kind.run, "__module__", ""), None)
    if module is not None:
        texts.append(_source(module))
        seen = {module.__name__}
        for value in vars(module).values():
            name = getattr(value, "__module__", None) if isinstance(value, type) else None
            if name and name not in seen and name in sys.modules and not name.startswith(("pydantic", "typing")):
                seen.add(name)
                texts.append(_source(sys.modules[name]))
    return [t for t in texts if t]


def _class_sources(model: type[BaseModel]) -> list[str]:
    return [text for cls in model.__mro__ if isinstance(cls, type) and issubclass(cls, BaseModel)
            and cls is not BaseModel for text in [_source(cls)] if text]


def _model_sources(model: type[BaseModel], fallback: list[str]) -> list[str]:
    """The sources documenting a nested params model: a kind's own model (a tune's `finetune` is the
    finetune kind's params) is documented where that kind is; a plain class by its own source."""
    from jobs import all_kinds

    for kind in all_kinds():
        if kind.params_model is model:
            return sources_of(kind)
    return _class_sources(model) + fallback


def _comments(model: type[BaseModel], sources: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for text in sources:
        for name, comment in harvest(text).items():
            if name in model.model_fields:
                found.setdefault(name, comment)
    return found


def type_name(annotation: Any) -> str:
    """A type as people write it: `float | None`, `list[str]`, `Literal['a', 'b']`."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{name}[{args}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field) -> tuple[bool, Any]:
    """(required, default value as shown)."""
    if field.is_required():
        return True, None
    if field.default is not PydanticUndefined:
        return False, field.default
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return False, None
        return False, value.model_dump() if isinstance(value, BaseModel) else value
    return False, None


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and typing.get_origin(annotation) in (
                typing.Union, types.UnionType):
            return arg
    return None


def kind_docs(kind) -> list[dict]:
    """Every param of a kind (`field_docs` of its params model, documented from `sources_of`)."""
    return field_docs(kind.params_model, sources=sources_of(kind))


def field_docs(model: type[BaseModel], prefix: str = "", sources: list[str] | None = None) -> list[dict]:
    """Every param of `model` (and of the models nested in it, as `outer.inner`), in order:
    {name, type, required, default, help}; help from a Field description, else a comment."""
    sources = sources if sources is not None else _class_sources(model)
    comments = _comments(model, sources)
    out = []
    for name, field in model.model_fields.items():
        required, default = _default(field)
        nested = _nested_model(field.annotation)
        help_text = field.description or comments.get(name, "")
        whole = nested is not None and nested is field.annotation  # its own fields follow: no default shown
        out.append({"name": prefix + name, "type": type_name(field.annotation), "required": required,
                    "default": None if whole else default, "help": help_text, "fields_below": whole})
        if nested is not None:
            out.extend(field_docs(nested, f"{prefix}{name}.", _model_sources(nested, sources)))
    return out


def model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The params model a dotted path's last key belongs to (`finetune.lrr` -> the finetune model)."""
    for key in path:
        field = model.model_fields.get(key)
        nested = _nested_model(field.annotation) if field is not None else None
        if nested is None:
            return None
        model = nested
    return model


def closest(name: str, known: list[str]) -> str | None:
    """The known name `name` was most likely meant to be (difflib), or None."""
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not found:
        lowered = {k.lower(): k for k in known}
        found = [lowered[name.lower()]] if name.lower() in lowered else []
    return found[0] if found else None


def suggest_keys(model: type[BaseModel], errors: list[tuple[str, str]], kind: str = "KIND") -> list[tuple[str, str]]:
    """ParamsError's (path, message) pairs with "unknown key" ones saying the closest known key:
    `unknown key (did you mean lr?)`, or where the known ones are listed when none is close."""
    out = []
    for path, message in errors:
        if message == "unknown key" and path:
            *parents, key = path.split(".")
            owner = model_at(model, parents)
            if owner is not None:
                known = list(owner.model_fields)
                guess = closest(key, known)
                message += f" (did you mean {guess}?)" if guess else f" (sched kinds {kind} lists the known ones)"
        out.append((path, message))
    return out
