"""Declared parameter ranges: one check for method parameters, training options, studies and the API.

A dataclass field states what it accepts next to its type and default, with ``param``::

    lr: float = param(0.01, gt=0)                       # > 0
    mask_ratio: float = param(0.5, gt=0, le=1)          # in (0, 1]
    batch_size: int = param(64, ge=1)                   # >= 1
    optimizer: str = param("sgd", choices=OPTIMIZERS)   # one of sgd, adam, adamw
    max_loss: float | None = param(None, gt=0, inf=True)  # None, or > 0 and +inf allowed

``check_fields(obj, owner)`` then checks every field of the instance, declared or not: the value has the
annotated type (int, float, bool, str; ``None`` only for optional fields), a float is never NaN and never
infinite unless the field says ``inf=True``, and a declared range holds. A field without a declaration but
with a conventional name (``lr``, ``*_lr``, ``batch_size``, ``*_batch_size``, ``optimizer``, ``schedule``)
gets that name's usual range. Bad values would otherwise run for minutes and save a model full of NaN or
an untouched one, so the error comes before any work and names the owner, parameter, value and range.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ObliviateError

OPTIMIZERS = ("sgd", "adam", "adamw")
SEED_MAX = 2**63 - 1  # seeds reach torch.manual_seed and SQLite: both take signed 64-bit integers
SCHEDULES = ("onecycle", "cosine", "constant")
RANGE = "obliviate.range"  # the dataclass field metadata key


@dataclass(frozen=True)
class Range:
    """Allowed values of one parameter: bounds (open ``gt``/``lt``, closed ``ge``/``le``) or choices."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    inf: bool = False  # +/-inf allowed (e.g. "no cap")

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = f"({_num(self.gt)}" if self.gt is not None else f"[{_num(self.ge)}" if self.ge is not None else None
        high = f"{_num(self.lt)})" if self.lt is not None else f"{_num(self.le)}]" if self.le is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return ("> " if low[0] == "(" else ">= ") + low[1:]
        if high:
            return ("< " if high[-1] == ")" else "<= ") + high[:-1]
        return "any finite number" if not self.inf else "any number"

    def holds(self, v: Any) -> bool:
        if self.choices is not None:
            return v in self.choices
        return not ((self.gt is not None and not v > self.gt) or (self.ge is not None and not v >= self.ge)
                    or (self.lt is not None and not v < self.lt) or (self.le is not None and not v <= self.le))


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def param(default: Any = dataclasses.MISSING, *, gt=None, ge=None, lt=None, le=None, choices=None,
          inf: bool = False, like: Range | None = None, **field_kw) -> Any:
    """A dataclass field with a declared range (``like=`` reuses another field's, see ``declared``)."""
    rng = like if like is not None else Range(gt, ge, lt, le, tuple(choices) if choices is not None else None, inf)
    return field(default=default, metadata={RANGE: rng}, **field_kw)


def declared(cls: type, name: str) -> Range | None:
    """The range ``cls.name`` declares (to give another class's field the same one)."""
    return next((f.metadata.get(RANGE) for f in dataclasses.fields(cls) if f.name == name), None)


def _conventional(name: str) -> Range | None:
    """The usual range of a parameter known by its name, for fields that declare none."""
    if name == "lr" or name.endswith("_lr"):
        return Range(gt=0)
    if name == "batch_size" or name.endswith("_batch_size"):
        return Range(ge=1)
    if name == "optimizer":
        return Range(choices=OPTIMIZERS)
    if name == "schedule":
        return Range(choices=SCHEDULES)
    return None


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of an annotation such as ``float | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), type(None) in args
    return annotation, False


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ConversionError(ObliviateError):
    """A value that is not of its field's type; ``kind`` ("an integer") and ``type_name`` ("int") say what was
    expected, and each caller names where the value came from."""

    def __init__(self, kind: str, type_name: str):
        super().__init__(f"expected {kind}")
        self.kind, self.type_name = kind, type_name


_TEXT_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def convert(value: Any, annotation: Any, *, parse: bool = False) -> Any:
    """``value`` as the type its field declares (int, float, bool, str, ``X | None``, dict): the one converter
    behind every config source.

    ``parse``: a string is text to read (``--param lr=0.01`` on the command line); other values pass as
    they are. Otherwise the value already has a type (a YAML study), which must match; an int widens to
    float, and a bool is never a number. Raises ``ConversionError``.
    """
    base, optional = _base_type(annotation)
    if isinstance(base, str):  # an annotation left as text
        base = _TEXT_TYPES.get(base.split(" ")[0], str)
    kind, type_name = _KINDS.get(base, "a mapping" if base is dict else str(base)), getattr(base, "__name__", base)
    if parse:
        return _parse_text(value, base, optional, kind, type_name) if isinstance(value, str) else value
    if value is None:
        if optional:
            return None
        raise ConversionError(kind, type_name)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {bool: isinstance(value, bool), int: is_number and isinstance(value, int), float: is_number,
          str: isinstance(value, str)}.get(base, True)
    if base is dict or typing.get_origin(base) is dict:
        ok, kind = isinstance(value, dict), "a mapping"
    if not ok:
        raise ConversionError(kind, type_name)
    return float(value) if base is float else value


def _parse_text(value: str, base: Any, optional: bool, kind: str, type_name: str) -> Any:
    if base is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConversionError(kind, type_name)
    if value.lower() == "none" and optional:
        return None
    if base in (int, float, str):
        try:
            return base(value)
        except ValueError:
            raise ConversionError(kind, type_name) from None
    return value


def check_value(owner: str, name: str, value: Any, annotation: Any, rng: Range | None = None) -> None:
    """Raise ``ObliviateError`` naming ``owner``, ``name``, ``value`` and the allowed range if it is bad."""
    base, optional = _base_type(annotation)
    rng = rng if rng is not None else _conventional(name)
    allowed = f" (allowed: {rng.describe()})" if rng is not None else ""
    if value is None:
        if optional or base not in _KINDS:
            return
        raise ObliviateError(f"{owner}: {name}=None: expected {_KINDS[base]}{allowed}")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif base is str:
        ok = isinstance(value, str)
    else:
        return  # dicts and other structures: their own code checks them
    if not ok:
        raise ObliviateError(f"{owner}: {name}={value!r}: expected {_KINDS[base]}{allowed}")
    if base is float and (math.isnan(value) or (math.isinf(value) and not (rng is not None and rng.inf))):
        raise ObliviateError(f"{owner}: {name}={value!r} is not a finite number{allowed}")
    if rng is not None and not rng.holds(value):
        if rng.choices is not None:
            choices = ", ".join(map(str, rng.choices))
            raise ObliviateError(f"{owner}: unknown {name} {value!r}; choose one of: {choices}")
        raise ObliviateError(f"{owner}: {name}={value!r} is out of range{allowed}")


def check_fields(obj: Any, owner: str) -> None:
    """Check every field of the dataclass instance ``obj`` (see the module docstring)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(owner, f.name, getattr(obj, f.name), hints.get(f.name, Any), f.metadata.get(RANGE))
