"""Reads the shipped Grafana dashboard in tests: every query it runs, with Grafana's variables
replaced by values Prometheus accepts, and the metric and label names those queries use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[1] / "configs/grafana/capserve-dashboard.json"

# Grafana's template query function: label_values(<series selector>, <label>).
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<match>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")
# $name, ${name}, ${name:format} and [[name]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
METRIC = re.compile(r"\bcapserve_[A-Za-z0-9_]+")
MATCHER_LABEL = re.compile(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class DashboardQuery:
    # Where it is: the panel title and refId, or the template variable.
    where: str
    # As written in the dashboard.
    raw: str
    # A template variable's label_values(match, label) query: what it asks for.
    label_values: tuple[str, str] | None = None


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def _panel_queries(node: Any, title: str) -> Iterator[DashboardQuery]:
    """Every `expr` under `node` (panels, rows' nested panels, targets), however deep."""
    if isinstance(node, dict):
        title = node.get("title", title) if "type" in node else title
        expr = node.get("expr")
        if isinstance(expr, str):
            yield DashboardQuery(f"{title} [{node.get('refId', '?')}]", expr)
        for key, value in node.items():
            if key != "templating":
                yield from _panel_queries(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from _panel_queries(item, title)


def _variable_queries(dashboard: Mapping[str, Any]) -> Iterator[DashboardQuery]:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if not isinstance(text, str):
            raise ValueError(f"template variable {variable.get('name')!r} has no query")
        where = f"variable ${variable.get('name')}"
        found = LABEL_VALUES.match(text)
        if found is None:  # a plain PromQL query
            yield DashboardQuery(where, text)
        else:
            yield DashboardQuery(where, text, (found["match"], found["label"]))


def queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    """Every panel target's expr and every query variable's query."""
    return [*_panel_queries(dashboard.get("panels", []), "?"), *_variable_queries(dashboard)]


def count_exprs(node: Any) -> int:
    """How many `expr` keys the JSON holds anywhere (to check `queries` missed none)."""
    if isinstance(node, dict):
        here = 1 if isinstance(node.get("expr"), str) else 0
        return here + sum(count_exprs(v) for k, v in node.items() if k != "templating")
    if isinstance(node, list):
        return sum(count_exprs(v) for v in node)
    return 0


def variable_values(dashboard: Mapping[str, Any], rate_interval: str) -> dict[str, str]:
    """What each variable stands for in a query: Grafana's interval built-ins as `rate_interval`,
    each template variable as its "All" value (a regex matching every value)."""
    values = {name: rate_interval for name in ("__rate_interval", "__interval", "__range")}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every variable replaced; KeyError for a variable the dashboard lacks."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The capserve metric (sample) names an expression reads, e.g. capserve_errors_total."""
    return set(METRIC.findall(expr))


def label_names(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    names = set(MATCHER_LABEL.findall(expr))
    for group in GROUPING.findall(expr):
        names.update(name.strip() for name in group.split(",") if name.strip())
    return names
