"""mkdocs hook: reference sections generated from the code, so they cannot drift.

A page asks for a generated section with an HTML comment on a line of its own:

    <!-- generated: cli node-proxy -->      every command and flag of node-proxy
    <!-- generated: cli api-proxy -->       every command and flag of api-proxy
    <!-- generated: metrics node-proxy -->  every metric node-proxy exports, per mode
    <!-- generated: metrics api-proxy -->   every metric api-proxy exports

The CLI sections walk the Typer apps' command trees (the same objects that parse
the flags at run time); the metrics sections read the metric registries the
daemons themselves build. tests/docs checks both against the apps.
"""

from __future__ import annotations

import enum
import pathlib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

import typer
import typer.main

MARKER = re.compile(r"^<!-- generated: (\w+) ([\w-]+) -->$", re.MULTILINE)


# ------------------------------------------------------------------------------ CLIs


def node_proxy_group() -> Any:
    """node-proxy's command tree, with the lab mounted even before the CLI mounts it."""
    from kubenet.cli.node_proxy import app
    from kubenet.lab.cli import app as lab_app

    group: Any = typer.main.get_command(app)
    if "lab" not in group.commands:
        group.commands["lab"] = typer.main.get_command(lab_app)
    return group


def api_proxy_group() -> Any:
    from kubenet.cli.api_proxy import app

    return typer.main.get_command(app)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _annotation(param: Any) -> Any:
    """The Python type a parameter parses to (Typer keeps it; older ones via click types)."""
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    # Optional[X] and list[X] -> X
    for _ in range(2):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if args and (typing.get_origin(annotation) in (list, typing.Union, types.UnionType)):
            annotation = args[0]
    return annotation


def _kind(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = _annotation(param)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    names = {str: "string", int: "int", float: "float", bool: "flag", pathlib.Path: "path"}
    if annotation in names:
        return names[annotation]
    click_type = getattr(param, "type", None)
    choices = getattr(click_type, "choices", None)
    if choices:
        return " \\| ".join(f"`{c}`" for c in choices)
    return str(getattr(click_type, "name", "string")).lower()


def _default(param: Any) -> str:
    value = param.default
    if getattr(param, "is_flag", False) or value is None or value == "" or value == []:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    value = getattr(value, "value", value)  # enums
    return f"`{value}`"


def option_names(param: Any) -> list[str]:
    """Every spelling of an option (``-p``, ``--port``, ``--no-x``)."""
    return [*param.opts, *getattr(param, "secondary_opts", [])]


def _params_table(params: Iterable[Any]) -> list[str]:
    options = [p for p in params if p.param_type_name == "option" and not p.hidden]
    arguments = [p for p in params if p.param_type_name == "argument"]
    lines: list[str] = []
    if arguments:
        lines += ["| argument | help |", "| --- | --- |"]
        for arg in arguments:
            lines.append(f"| `{str(arg.name).upper()}` | {_cell(getattr(arg, 'help', '') or '')} |")
        lines.append("")
    if options:
        lines += ["| flag | value | default | help |", "| --- | --- | --- | --- |"]
        for opt in options:
            names = ", ".join(f"`{n}`" for n in option_names(opt))
            lines.append(f"| {names} | {_kind(opt)} | {_default(opt)} | {_cell(opt.help or '')} |")
        lines.append("")
    return lines


def commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    """(full command line, command) for every command under ``group``, depth first."""
    found: list[tuple[str, Any]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            found += commands(command, path)
        else:
            found.append((path, command))
    return found


def cli_markdown(group: Any, prog: str) -> str:
    lines: list[str] = []
    for path, command in commands(group, prog):
        lines += [f"### `{path}`", ""]
        if command.help:
            lines += [command.help.strip(), ""]
        lines += _params_table(command.params)
    return "\n".join(lines)


# --------------------------------------------------------------------------- metrics


def _labels(metric: Any) -> tuple[str, ...]:
    # prometheus_client keeps label names on the metric (and on metric families).
    return tuple(getattr(metric, "_labelnames", ()) or ())


def node_proxy_metrics() -> dict[str, dict[str, Any]]:
    """name -> type, help, labels, modes; from node-proxy's own registry, per mode."""
    from prometheus_client import Counter, Gauge, Histogram

    from kubenet.node.metrics import Metrics
    from kubenet.render import ProxyMode

    found: dict[str, dict[str, Any]] = {}
    for mode in ProxyMode:
        metrics = Metrics(mode)
        for metric in vars(metrics).values():
            if not isinstance(metric, Counter | Gauge | Histogram):
                continue
            kind = metric._type  # "counter", "gauge", "histogram"
            name = metric._name + ("_total" if kind == "counter" else "")
            entry = found.setdefault(
                name,
                {
                    "type": kind,
                    "help": metric._documentation,
                    "labels": _labels(metric),
                    "modes": [],
                },
            )
            entry["modes"].append(mode.value)
    return found


def api_proxy_metrics() -> dict[str, dict[str, Any]]:
    from kubenet.forward.observe import ProxyMetrics

    found: dict[str, dict[str, Any]] = {}
    for family in ProxyMetrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = {
            "type": family.type,
            "help": family.documentation,
            "labels": _labels(family),
            "modes": [],
        }
    # Labels of collector-made families, which carry no samples until traffic flows.
    for name, labels in _API_PROXY_LABELS.items():
        found[name]["labels"] = found[name]["labels"] or labels
    return found


_API_PROXY_LABELS = {
    "apiproxy_requests_total": ("cluster", "method", "code"),
    "apiproxy_request_duration_seconds": ("cluster", "method"),
    "apiproxy_response_bytes_total": ("cluster",),
    "apiproxy_inflight_requests": (),
}


def metrics_markdown(metrics: dict[str, dict[str, Any]], with_modes: bool) -> str:
    head = "| metric | type | labels | " + ("modes | " if with_modes else "") + "help |"
    lines = [head, "|" + " --- |" * (5 if with_modes else 4)]
    for name in sorted(metrics):
        m = metrics[name]
        labels = ", ".join(f"`{label}`" for label in m["labels"]) or "-"
        modes = f" {', '.join(m['modes'])} |" if with_modes else ""
        lines.append(f"| `{name}` | {m['type']} | {labels} |{modes} {_cell(m['help'])} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ the hook


def generate(kind: str, what: str) -> str:
    if (kind, what) == ("cli", "node-proxy"):
        return cli_markdown(node_proxy_group(), "node-proxy")
    if (kind, what) == ("cli", "api-proxy"):
        return cli_markdown(api_proxy_group(), "api-proxy")
    if (kind, what) == ("metrics", "node-proxy"):
        return metrics_markdown(node_proxy_metrics(), with_modes=True)
    if (kind, what) == ("metrics", "api-proxy"):
        return metrics_markdown(api_proxy_metrics(), with_modes=False)
    raise ValueError(f"unknown generated section: {kind} {what}")


def expand(markdown: str) -> str:
    """The page with every marker replaced by its generated section."""
    return MARKER.sub(lambda m: generate(m.group(1), m.group(2)), markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return expand(markdown)
