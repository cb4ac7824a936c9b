"""Typed parameter sections: every stage reads its params into one dataclass, checked here.

A wrong key, a missing key, a value of the wrong type or out of its range is one line naming
the params path and the fix, never a traceback from deep inside the pipeline. Ranges are part of
a field's type: `Count` (an integer >= 1), `Natural` (>= 0), `Positive` (a number > 0),
`NonNegative` (>= 0), `Probability` (in [0, 1]).
"""

import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml

from trajectory_transformer.errors import PipelineError

T = TypeVar("T")

# When set (the pipeline test sets it), the params paths a stage reads are recorded in
# `params_read` and appended to this file by the stage runner, to be checked against the
# stage's `params:` list in dvc.yaml: a param read but not listed would let DVC reuse stale results.
PARAMS_READS_VARIABLE = "TT_PARAMS_READS"
params_read: set[str] = set()


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric param; `low_open` excludes `low` itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def holds(self, value) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"


Count = Annotated[int, Range(low=1)]
Natural = Annotated[int, Range(low=0)]
NonNegative = Annotated[float, Range(low=0)]
Positive = Annotated[float, Range(low=0, low_open=True)]
Probability = Annotated[float, Range(low=0, high=1)]


def load_params(path: str | Path = "params.yaml") -> dict:
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections")
    return params


def section(params: dict, dotted: str) -> Any:
    """params['a']['b'] for 'a.b', with a clear error when a key is missing."""
    node = params
    for depth, key in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(dotted.split(".")[:depth]) or "params.yaml"
            known = sorted(node) if isinstance(node, dict) else []
            raise PipelineError(f"params: no '{key}' in {where} (known: {', '.join(map(str, known))})")
        node = node[key]
    if not isinstance(node, dict):  # a mapping is recorded field by field when parsed
        params_read.add(dotted)
    return node


def _describe(annotation) -> str:
    if get_origin(annotation) is Annotated:
        base, *bounds = get_args(annotation)
        return " ".join([_describe(base), *(b.describe() for b in bounds if isinstance(b, Range))])
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(annotation))
    if get_origin(annotation) is list:
        return f"a list of {_describe(get_args(annotation)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null", dict: "a mapping"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _convert(value, annotation, where: str):
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *bounds = get_args(annotation)
        value = _convert(value, base, where)
        if all(b.holds(value) for b in bounds if isinstance(b, Range)):
            return value
    elif origin is Literal:
        if value in get_args(annotation):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in get_args(annotation):
            try:
                return _convert(value, option, where)
            except PipelineError:
                continue
    elif origin is list:
        if isinstance(value, list):
            return [_convert(v, get_args(annotation)[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif dataclasses.is_dataclass(annotation):
        return parse(annotation, value, where)
    elif annotation is dict:  # checked where it is used (e.g. planner overrides, merged into `plan`)
        if isinstance(value, dict):
            return value
    elif annotation is type(None):
        if value is None:
            return None
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported params annotation {annotation!r}")
    raise PipelineError(f"params {where}: expected {_describe(annotation)}, got {value!r}; fix it in params.yaml")


def parse(cls: type[T], values, where: str) -> T:
    """Build dataclass `cls` from a params mapping, checking keys and types."""
    if not isinstance(values, dict):
        raise PipelineError(f"params {where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PipelineError(f"params {where}: unknown key '{unknown[0]}' (known: {', '.join(fields)})")
    kwargs = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise PipelineError(f"params {key} is missing: add it to params.yaml")
    if os.environ.get(PARAMS_READS_VARIABLE):
        return recording(cls, where)(**kwargs)
    return cls(**kwargs)


@functools.cache
def recording(cls: type, where: str) -> type:
    """A subclass of dataclass `cls` that records each field read as `where.field` (a field
    holding a parsed, recording section records nothing itself: its own fields do; a section
    left to its default counts as read whole)."""

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in fields and not hasattr(type(value), "params_where"):
            params_read.add(f"{where}.{name}")
        return value

    fields = {f.name for f in dataclasses.fields(cls)}
    return type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__module__": cls.__module__,
                                       "params_where": where})
