"""Conditions (`when:`): small expressions over named fields of dependency results.

    task_type.label in ['Code Generation'] and complexity.prompt_complexity_score > 0.5

An expression is parsed with Python's `ast` and walked by this module: only the nodes listed
here are accepted (comparisons, and/or/not, arithmetic, literals, `len()`, and names of
dependencies with their fields), so a condition can read results and nothing else. Nothing is
ever passed to `eval`.

A name is a dependency's result. Its attributes are `label`, `confidence`, `score`, `labels`,
`path`, `probabilities`, then any field of its `fields` (e.g. `pii.count`); a JSON field's own
fields and list items are reached with `.` and `[...]`.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from capabilities.results import CapabilityResult

MAX_LENGTH = 1000
MAX_NODES = 200

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_RESULT_ATTRIBUTES = ("label", "confidence", "score", "labels", "path", "probabilities")


class ConditionError(ValueError):
    """A condition that cannot be used; the message says why (it quotes only the condition)."""


class ConditionEvaluationError(ValueError):
    """A condition that failed on one text's results (e.g. a field the result lacks)."""


class _Missing:
    """A field a result does not have: comparisons with it raise, so the text is skipped."""

    def __repr__(self) -> str:
        return "missing"


def _attribute(value: Any, name: str) -> Any:
    if isinstance(value, CapabilityResult):
        if name in _RESULT_ATTRIBUTES:
            attr = getattr(value, name)
            return list(attr) if isinstance(attr, tuple) else attr
        fields = value.fields or {}
        if name in fields:
            return fields[name]
        raise ConditionEvaluationError(f"'{value.capability}' has no field '{name}'")
    if isinstance(value, Mapping) and name in value:
        return value[name]
    raise ConditionEvaluationError(f"no field '{name}'")


@dataclass(frozen=True)
class Condition:
    source: str
    tree: ast.Expression
    # The dependency names the expression reads.
    names: frozenset[str]

    def holds(self, deps: Mapping[str, CapabilityResult]) -> bool:
        """Whether the condition holds for one text's dependency results.

        Raises ConditionEvaluationError when it cannot be evaluated on them."""
        try:
            return bool(_evaluate(self.tree.body, deps))
        except ConditionEvaluationError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, KeyError, IndexError) as exc:
            raise ConditionEvaluationError(f"{type(exc).__name__}: {exc}") from None


def _evaluate(node: ast.AST, deps: Mapping[str, CapabilityResult]) -> Any:
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(value, deps) for value in node.values)
        return any(_evaluate(value, deps) for value in node.values)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, deps)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, deps)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, deps)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BinOp):
        return _ARITHMETIC[type(node.op)](_evaluate(node.left, deps), _evaluate(node.right, deps))
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_evaluate(item, deps) for item in node.elts]
    if isinstance(node, ast.Name):
        return deps[node.id]
    if isinstance(node, ast.Attribute):
        return _attribute(_evaluate(node.value, deps), node.attr)
    if isinstance(node, ast.Subscript):
        container = _evaluate(node.value, deps)
        key = _evaluate(node.slice, deps)
        if isinstance(container, CapabilityResult):
            return _attribute(container, str(key))
        return container[key]
    if isinstance(node, ast.Call):
        (argument,) = node.args
        return len(_evaluate(argument, deps))
    raise ConditionEvaluationError(f"unsupported expression {type(node).__name__}")


def _check(node: ast.AST, names: set[str]) -> None:
    """Accepts only the node types `_evaluate` knows; collects the names read."""
    if isinstance(node, ast.BoolOp | ast.Compare | ast.BinOp | ast.UnaryOp):
        if isinstance(node, ast.Compare):
            unsupported = [type(op).__name__ for op in node.ops if type(op) not in _COMPARE]
        elif isinstance(node, ast.BinOp):
            unsupported = [] if type(node.op) in _ARITHMETIC else [type(node.op).__name__]
        elif isinstance(node, ast.UnaryOp):
            ok = isinstance(node.op, ast.Not | ast.USub | ast.UAdd)
            unsupported = [] if ok else [type(node.op).__name__]
        else:
            unsupported = []
        if unsupported:
            raise ConditionError(f"operator {unsupported[0]} is not allowed")
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise ConditionError(f"literal {node.value!r} is not allowed")
        return
    elif isinstance(node, ast.Name):
        if not isinstance(node.ctx, ast.Load):
            raise ConditionError("assignment is not allowed")
        names.add(node.id)
        return
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise ConditionError(f"field '{node.attr}' is not allowed")
    elif isinstance(node, ast.Call):
        if not (
            isinstance(node.func, ast.Name)
            and node.func.id == "len"
            and len(node.args) == 1
            and not node.keywords
        ):
            raise ConditionError("the only function allowed is len(x)")
        _check(node.args[0], names)
        return
    elif not isinstance(
        node,
        ast.List | ast.Tuple | ast.Set | ast.Subscript | ast.Load | ast.boolop | ast.cmpop,
    ) and not isinstance(node, ast.operator | ast.unaryop):
        raise ConditionError(f"{type(node).__name__} is not allowed in a condition")
    for child in ast.iter_child_nodes(node):
        _check(child, names)


@functools.lru_cache(maxsize=512)
def parse_condition(source: str) -> Condition:
    """Parses and checks a condition; raises ConditionError saying what is wrong."""
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"is not a valid expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ConditionError(f"has more than {MAX_NODES} parts")
    names: set[str] = set()
    _check(tree.body, names)
    return Condition(source=source, tree=tree, names=frozenset(names))
