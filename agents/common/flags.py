"""Command-line flags made from config dataclasses: one flag per field, its help the field's
docstring. Every command of `redteam-gym` that takes config fields (`train`, `eval`, `demo`,
`game`) makes its flags here, with public argparse only.

The naming rule, in one place:

- a field is `--name` (`batch_size` -> `--batch-size`); a nested config's fields are
  prefixed with its name (`kl.coef` -> `--kl-coef`, `lora.rank` -> `--lora-rank`);
- but the env's fields keep their own names (`env.judge` -> `--judge`), unless the outer
  config has a field of that name (`env.device` -> `--env-device`, `--device` being the
  learner's);
- `env.max_turns` is spelt `--turns` (`FLAG_NAMES`).

A flag's destination is the field's dotted path (`kl.coef`, `env.judge`) and it has no
default: `given(args, cls)` holds only the flags on the command line, so a config built from
them (`config_from_args`) keeps its own defaults for the rest.

A flag's type is read from the field's annotation as written, without evaluating it, so
building a parser imports none of the types an annotation names (a defender object, a
torch device) and so no model library: the annotation's first member that is not None
gives it (`str | Defender` -> str), `bool` gives `--x/--no-x`, a `Literal` gives choices,
and anything but `int`, `float` or `bool` is read as a string that the config parses.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from redteam_gym.envs.config import field_docs

FLAG_NAMES = {"env.max_turns": "--turns"}
"""Flags spelt otherwise than the naming rule says."""
UNPREFIXED = ("env",)
"""Nested configs whose fields keep their own flag names (`env.judge` -> `--judge`)."""

_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


@dataclasses.dataclass(frozen=True)
class Flag:
    """One config field as a command-line flag."""

    dest: str
    """The field's dotted path (`kl.coef`, `env.judge`): the argparse destination."""
    flag: str
    """The option string (`--kl-coef`, `--judge`, `--turns`)."""
    kind: type
    """The value's type (bool for a `--x/--no-x` pair)."""
    choices: tuple[Any, ...] | None
    """The allowed values of a `Literal` field."""
    help: str
    """The field's docstring."""


def flags(cls: type, exclude: frozenset[str] = frozenset()) -> list[Flag]:
    """The flags of config dataclass `cls`, nested configs flattened, but the `exclude`d
    destinations (`env.reward`; a nested config's name excludes all its fields)."""
    return list(_flags(cls, "", frozenset(), exclude))


def _flags(
    cls: type, prefix: str, outer: frozenset[str], exclude: frozenset[str]
) -> Iterator[Flag]:
    docs = field_docs(cls)
    names = frozenset(f.name for f in dataclasses.fields(cls))
    for f in dataclasses.fields(cls):
        dest = f"{prefix}{f.name}"
        if dest in exclude:
            continue
        nested = _nested_config(cls, f)
        if nested is not None:
            yield from _flags(nested, f"{dest}.", names, exclude)
            continue
        shown = dest
        if prefix.rstrip(".") in UNPREFIXED and f.name not in outer:
            shown = f.name
        flag = FLAG_NAMES.get(dest, "--" + shown.replace("_", "-").replace(".", "-"))
        kind, choices = _value_type(f.type)
        yield Flag(dest, flag, kind, choices, docs.get(f.name, ""))


def add_flags(
    parser: argparse.ArgumentParser, *classes: type, exclude: frozenset[str] = frozenset()
) -> None:
    """Add one flag per field of each config class to `parser`; a destination that several
    classes share (the learners' common fields) is added once, from the first."""
    seen: set[str] = set()
    for cls in classes:
        for flag in flags(cls, exclude):
            if flag.dest in seen:
                continue
            seen.add(flag.dest)
            kwargs: dict[str, Any] = {
                "dest": flag.dest,
                "default": argparse.SUPPRESS,
                "help": flag.help,
            }
            if flag.kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = flag.kind
                kwargs["metavar"] = flag.dest.rpartition(".")[2].upper()
                if flag.choices is not None:
                    kwargs["choices"] = flag.choices
            parser.add_argument(flag.flag, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line, by destination (`{"env.judge": ...}`)."""
    dests = {flag.dest for flag in flags(cls)}
    return {k: v for k, v in vars(args).items() if k in dests}


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build `cls` from the flags given on the command line (its defaults elsewhere)."""
    values = given(args, cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        nested = {
            k.removeprefix(f"{f.name}."): v for k, v in values.items() if k.startswith(f"{f.name}.")
        }
        if nested:
            default = (
                f.default_factory()  # type: ignore[misc]
                if f.default_factory is not dataclasses.MISSING
                else _nested_config(cls, f)()  # type: ignore[misc]
            )
            kwargs[f.name] = dataclasses.replace(default, **nested)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def config_dests(cls: type) -> set[str]:
    """The destinations of `cls`'s flags (`kl.coef`, `env.judge`, `seed`)."""
    return {flag.dest for flag in flags(cls)}


def flag_of(cls: type, dest: str) -> str:
    """The option string of destination `dest` of `cls`'s flags (`env.max_turns` -> `--turns`)."""
    return next(flag.flag for flag in flags(cls) if flag.dest == dest)


# ----- reading annotations without evaluating them ----------------------------------------------


def _nested_config(cls: type, f: dataclasses.Field) -> type | None:
    """The dataclass that field `f` of `cls` holds, or None for a plain value. The annotation
    is looked up by name in the module of the class that declares the field."""
    if not isinstance(f.type, str):
        return f.type if isinstance(f.type, type) and dataclasses.is_dataclass(f.type) else None
    owner = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
    found = vars(sys.modules[owner.__module__]).get(f.type.strip())
    return found if isinstance(found, type) and dataclasses.is_dataclass(found) else None


def _value_type(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """`(type, choices)` of a flag from its field's annotation (see the module docstring)."""
    if not isinstance(annotation, str):
        return _evaluated_type(annotation)
    members = [m for m in _union(ast.parse(annotation, mode="eval").body) if not _is_none(m)]
    first = members[0] if members else None
    if isinstance(first, ast.Subscript) and _name(first.value) == "Literal":
        values = ast.literal_eval(first.slice)
        choices = values if isinstance(values, tuple) else (values,)
        return type(choices[0]), choices
    return _SCALARS.get(_name(first) if first is not None else "", str), None


def _evaluated_type(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """The same for an evaluated annotation (a module without postponed annotations)."""
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    members = [a for a in get_args(annotation) if a is not type(None)]
    if members:
        return _evaluated_type(members[0])
    return (annotation if annotation in _SCALARS.values() else str), None


def _union(node: ast.expr) -> list[ast.expr]:
    """The members of `a | b | c` (or `Optional[a]`), in order."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(node.left) + _union(node.right)
    if isinstance(node, ast.Subscript) and _name(node.value) == "Optional":
        return [node.slice]
    return [node]


def _name(node: ast.expr) -> str:
    """The last name in `str`, `typing.Literal` or `torch.device` ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None
