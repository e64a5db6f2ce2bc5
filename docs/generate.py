"""Writes the references that must not drift from the code:

- docs/configuration.md, from the pydantic model (agent/config.py): every key, its type, default,
  environment variable and description;
- docs/metrics.md, from the metric families the exporters build (exporters/prometheus.py for
  the node agent, exporters/facility.py for the facility daemon): every family's exposed name,
  type, labels and HELP text, read from the source.

`python docs/generate.py` rewrites both; `--check` exits 1 if either is stale (make test runs it
through tests/project/test_docs.py).
"""

from __future__ import annotations

import ast
import contextlib
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from wattwise.config import Config

ROOT = Path(__file__).resolve().parent.parent

CONFIG_DOC = ROOT / "docs" / "configuration.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# The modules that build metric families: the node agent's and the facility daemon's exporters.
EXPORTERS = {"wattwise run": [ROOT / "exporters" / "prometheus.py"],
             "wattwise facility": [ROOT / "exporters" / "facility.py"]}  # fmt: skip
FAMILY_TYPES = {"CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}


# ---- configuration ----------------------------------------------------------------------------


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model inside an annotation (X, X | None, tuple[X, ...]) and how it nests."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if models and origin in (tuple, list):
        return models[0], "[]"
    if models and (origin is typing.Union or origin is types.UnionType):
        return models[0], ""
    return None, ""


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return {"str": "string", "float": "number", "int": "integer", "bool": "boolean",
                "PosixPath": "path", "Path": "path", "SecretStr": "secret"}.get(
            annotation.__name__, annotation.__name__)  # fmt: skip
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    return str(annotation)


_REQUIRED = object()


def _default(field: Any, value: Any = _REQUIRED) -> str:
    if value is _REQUIRED:
        if field.is_required():
            return "required"
        value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, SecretStr):
        return "(secret)"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    return f"`{value}`"


def _rows(
    model: type[BaseModel], prefix: str, instance: BaseModel | None = None
) -> list[tuple[str, str, str, str, str]]:
    """One row per key; under a section whose default is an instance (facility.it), the
    defaults are that instance's values."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner, nesting = _model_of(field.annotation)
        # A section has no variable of its own; a list of them (work.targets) is set in a file.
        env = "" if inner or "[]" in key else "WATTWISE_" + key.replace(".", "__").upper()
        value = getattr(instance, name) if instance is not None else _REQUIRED
        if inner is None or field.description:
            described = (field.description or "").replace("|", "\\|")
            default = _default(field, value)
            rows.append((key, _type_name(field.annotation), default, env, described))
        if inner is not None:
            nested = value if value is not _REQUIRED else field.get_default()
            nested = nested if isinstance(nested, BaseModel) else None
            rows.extend(_rows(inner, f"{key}{nesting}.", nested))
    return rows


def configuration_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic model in `agent/config.py` by `python docs/generate.py`; "
        "`make test` fails when it is stale. Every key is optional unless marked required. A YAML "
        "file (`--config`) sets them, `WATTWISE_*` environment variables override the file "
        "(nested keys joined with `__`; lists may be written comma-separated), and command-line "
        "flags override both. `config/wattwise.yaml` shows every section with its defaults.",
        "",
        "| key | type | default | environment | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, kind, default, env, meaning in _rows(Config, ""):
        env_cell = f"`{env}`" if env else ""
        lines.append(f"| `{key}` | {kind} | {default} | {env_cell} | {meaning} |")
    return "\n".join(lines) + "\n"


# ---- metrics ----------------------------------------------------------------------------------


def _text(node: ast.AST, constants: dict[str, Any]) -> str:
    """A string literal, an f-string (its fields shown as {name}) or an implicit join of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
            for v in node.values
        )
    if isinstance(node, ast.BinOp):
        return _text(node.left, constants) + _text(node.right, constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return str(constants[node.id])
    return "{" + ast.unparse(node) + "}"


def _labels(node: ast.AST | None, constants: dict[str, Any]) -> list[str]:
    if node is None:
        return []
    if isinstance(node, ast.Name) and node.id in constants:
        return list(constants[node.id])
    if isinstance(node, ast.List | ast.Tuple):
        labels = []
        for element in node.elts:
            if isinstance(element, ast.Starred):
                labels += _labels(element.value, constants)
            else:
                labels.append(_text(element, constants))
        return labels
    return [ast.unparse(node)]


def families(path: Path) -> list[dict[str, Any]]:
    """Every metric family a module builds, from its source."""
    tree = ast.parse(path.read_text())
    constants: dict[str, Any] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):
                    constants[target.id] = ast.literal_eval(statement.value)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = FAMILY_TYPES.get(node.func.id)
        if kind is None or len(node.args) < 2:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        names = [_text(node.args[0], constants)]
        if "{suffix}" in names[0]:  # one family per row of a (suffix, field, help) table
            table = next(v for k, v in constants.items() if k.endswith("GAUGES"))
            found += [
                _family(kind, names[0].replace("{suffix}", suffix), keywords, constants,
                        _text(node.args[1], constants).replace("{text}", text))
                for suffix, _, text in table
            ]  # fmt: skip
            continue
        found.append(_family(kind, names[0], keywords, constants, _text(node.args[1], constants)))
    return found


def _family(
    kind: str, name: str, keywords: dict[str, ast.AST], constants: dict[str, Any], help_text: str
) -> dict[str, Any]:
    unit = _text(keywords["unit"], constants) if "unit" in keywords else ""
    exposed = name + (f"_{unit}" if unit and not name.endswith(unit) else "")
    exposed += "_total" if kind == "counter" else ""
    return {
        "name": exposed,
        "type": kind,
        "labels": _labels(keywords.get("labels"), constants),
        "help": " ".join(help_text.split()),
    }


def metrics_reference() -> str:
    lines = [
        "# Metrics reference",
        "",
        "Generated from the metric families the exporters build, read from their source by "
        "`python docs/generate.py`; `make test` fails when it is stale. `{every}` in a HELP "
        "text is the sampling interval (`sampled every 1 s`). No sample carries a client-side "
        "timestamp, and no label is named `job`.",
    ]
    for daemon, paths in EXPORTERS.items():
        lines += [
            "",
            f"## `{daemon}`",
            "",
            "| metric | type | labels | help |",
            "|---|---|---|---|",
        ]
        seen: set[str] = set()
        for path in paths:
            for family in families(path):
                if family["name"] in seen:
                    continue
                seen.add(family["name"])
                labels = ", ".join(f"`{label}`" for label in family["labels"]) or "-"
                help_text = family["help"].replace("|", "\\|")
                lines.append(f"| `{family['name']}` | {family['type']} | {labels} | {help_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    wanted = {CONFIG_DOC: configuration_reference(), METRICS_DOC: metrics_reference()}
    if "--check" in argv:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is stale: run python docs/generate.py", file=sys.stderr
            )
        return 1 if stale else 0
    for path, text in wanted.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
