"""Describe config dataclasses: each field's name, type, default and help text.

The help text of a field is the trailing `# comment` on the line that declares it, e.g.

    max_len: int = 200  # most recent events fed to the model

Nested dataclass fields are expanded with dotted names (`synthetic.n_users`). This module does
not import torch, so `sinkrec config show` and the documentation generator stay cheap.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

from .checks import rule_of


@dataclass(frozen=True)
class FieldDoc:
    """One option: dotted name, type as written in the source, default value and help text."""

    name: str
    type: str
    default: Any
    help: str


def _comments_by_line(source: str) -> dict[int, str]:
    """1-based line number -> text of the comment on that line (without the leading '#')."""
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return comments


def _field_help(cls: type) -> dict[str, str]:
    """Field name -> trailing comment, read from the class body's source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = _comments_by_line(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            last = node.end_lineno or node.lineno
            # a trailing comment sits on the declaration's last line (or its first, if it wraps)
            text = comments.get(last) or comments.get(node.lineno, "")
            line = source.splitlines()[node.lineno - 1]
            if text and not line.lstrip().startswith("#"):
                found[node.target.id] = text
    return found


def _type_text(field: dataclasses.Field, hints: dict[str, Any]) -> str:
    if isinstance(field.type, str):
        return field.type
    hint = hints.get(field.name, field.type)
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _with_range(text: str, field: dataclasses.Field) -> str:
    """The help text plus the field's allowed range (`sinkrec.checks.option`), so the documented
    range is the checked one; choices are left out, the help already names them."""
    rule = rule_of(field)
    if rule is None or rule.choices or rule.text in text or "non-empty" in rule.text:
        return text
    return f"{text} ({rule.text})" if text else f"({rule.text})"


def describe_fields(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every field of dataclass `cls`, in declaration order; nested dataclasses recurse."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: fall back to the source text
        hints = {}
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # inherited fields: their comments sit in the base class
        if dataclasses.is_dataclass(klass):
            helps.update(_field_help(klass))
    rows: list[FieldDoc] = []
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        default = _default(field)
        nested = hints.get(field.name)
        if not (isinstance(nested, type) and dataclasses.is_dataclass(nested)):
            nested = type(default) if dataclasses.is_dataclass(default) and not isinstance(default, type) else None
        if nested is not None:
            rows.extend(describe_fields(nested, prefix=f"{name}."))
            continue
        rows.append(FieldDoc(name, _type_text(field, hints), default, _with_range(helps.get(field.name, ""), field)))
    return rows


def format_default(value: Any) -> str:
    """A default as a user would write it in YAML or after `--set`."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_default(v)}" for k, v in value.items()) + "}"
    return repr(value)


def format_options(rows: list[FieldDoc], prefix: str = "") -> str:
    """Aligned plain-text table with columns key, default and help (one line per option)."""
    table = [(f"{prefix}{row.name}", format_default(row.default), row.help) for row in rows]
    head = ("key", "default", "help")
    width_key = max([len(head[0])] + [len(r[0]) for r in table])
    width_default = max([len(head[1])] + [len(r[1]) for r in table])
    lines = [f"{head[0]:<{width_key}}  {head[1]:<{width_default}}  {head[2]}".rstrip()]
    lines.append(f"{'-' * width_key}  {'-' * width_default}  {'-' * len(head[2])}")
    for key, default, text in table:
        lines.append(f"{key:<{width_key}}  {default:<{width_default}}  {text}".rstrip())
    return "\n".join(lines)


def model_options() -> dict[str, type]:
    """Model name -> its options dataclass, from `sinkrec.models.registry.MODELS` (imports torch)."""
    from .models.registry import MODELS

    return {name: options for name, (_, options) in sorted(MODELS.items())}


__all__ = ["FieldDoc", "describe_fields", "format_default", "format_options", "model_options"]
