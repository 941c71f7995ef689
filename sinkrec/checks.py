"""Range rules for config fields, declared next to the field they check.

    epochs: int = option(20, at_least(1))  # most epochs to train

A dataclass that inherits `Checked` tests every field's rule (and its own `check()` for rules
that relate two fields) whenever it is built, so a bad value fails when the config is built,
before any data is read, with a message naming the key and the allowed range. `from_dict`
prefixes the key with its section (`train.epochs`). This module imports nothing heavy: the
config schema, the model options and the documentation generator all use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, shorten


@dataclass(frozen=True)
class Rule:
    """What a value must be: `text` completes "KEY must be …"; `test` says whether a value is."""

    text: str
    test: Callable[[Any], bool]
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """None if `value` obeys the rule, else the sentence that says why not (without the key)."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError, OverflowError):
            ok = False
        if ok:
            return None
        hint = closest(value, self.choices) if self.choices else ""
        return f"must be {self.text}, got {show(value)}{hint}"


def closest(value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """' (did you mean 'x'?)' for a choice differing only in case or by a small typo, else ''."""
    if not isinstance(value, str):
        return ""
    lower = {c.lower(): c for c in choices}
    close = [lower[value.lower()]] if value.lower() in lower else \
        difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, shortened, without formatting all of a huge value."""
    return shorten(value, limit)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and (isinstance(value, int) or math.isfinite(value))


def _fmt(x: float) -> str:
    return str(x) if isinstance(x, int) or not float(x).is_integer() else str(int(x))


def at_least(low: float) -> Rule:
    """value ≥ low (and finite)."""
    return Rule(f"≥ {_fmt(low)}", lambda v: _finite(v) and v >= low)


def above(low: float) -> Rule:
    """value > low (and finite)."""
    return Rule(f"a finite number > {_fmt(low)}", lambda v: _finite(v) and v > low)


def finite() -> Rule:
    return Rule("a finite number", _finite)


def between(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    """low ≤ value ≤ high, either end optionally open: `between(0, 1, open_high=True)` is [0, 1)."""
    text = f"in {'(' if open_low else '['}{_fmt(low)}, {_fmt(high)}{')' if open_high else ']'}"

    def test(v: Any) -> bool:
        if not _finite(v):
            return False
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return Rule(text, test)


def one_of(*choices: str) -> Rule:
    return Rule("one of " + " | ".join(choices), lambda v: v in choices, tuple(choices))


def nonempty() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


PROBABILITY = between(0, 1)
DROPOUT = between(0, 1, open_high=True)


def option(default: Any, rule: Rule) -> Any:
    """A dataclass field with a default and the rule its value must obey."""
    return dataclasses.field(default=default, metadata={"rule": rule})


def rule_of(field: dataclasses.Field) -> Rule | None:
    return field.metadata.get("rule") if field.metadata else None


class OptionError(ConfigError):
    """A field's value breaks its rule; `key` is the field's name within its dataclass."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key = key
        self.problem = problem


class Checked:
    """Mixin for config dataclasses: every field's rule, then `check()`, run when one is built."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            rule = rule_of(field)
            if rule is not None:
                problem = rule.problem(getattr(self, field.name))
                if problem:
                    raise OptionError(field.name, problem)
        self.check()

    def check(self) -> None:
        """Rules that relate two fields; raise `OptionError(key, "must …, got …")`."""


def heads_fit(obj: Any) -> None:
    """Recurrent heads: with `head_dim` 0 each head is d_model / n_heads wide, so n_heads must divide d_model."""
    if not obj.head_dim:
        divides(obj, "n_heads", "d_model")


def divides(obj: Any, part: str, whole: str) -> None:
    """`obj.part` must divide `obj.whole` (heads and widths)."""
    a, b = getattr(obj, part), getattr(obj, whole)
    if b % a:
        raise OptionError(part, f"must divide {whole} ({show(b)}), got {show(a)}")


__all__ = ["DROPOUT", "PROBABILITY", "Checked", "OptionError", "Rule", "above", "at_least", "between", "divides",
           "finite", "heads_fit", "nonempty", "one_of", "option", "rule_of", "show", "closest"]
