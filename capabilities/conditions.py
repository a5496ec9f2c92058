"""Conditions (`when:`): small expressions over named fields of dependency results.

    task_type.label in ['Code Generation'] and complexity.prompt_complexity_score > 0.5

An expression is parsed with Python's `ast` and walked by this module: only the nodes listed
here are accepted (comparisons, and/or/not, arithmetic, literals, `len()`, and names of
dependencies with their fields), so a condition can read results and nothing else. Nothing is
ever passed to `eval`.

A name is a dependency's result, always read through a field: `label`, `confidence`, `score`,
`labels`, `path`, `probabilities`, then any field of its `fields` (e.g. `pii.count`); a JSON
field's own fields and list items are reached with `.` and `[...]` (literal keys only).
Arithmetic takes numbers only. A condition that cannot be evaluated on a text's results (a
missing field, None compared with a number) raises ConditionEvaluationError: the executor then
skips the text, a rule case does not apply.
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
    # The expression compiled (see _compile).
    evaluate: Callable[[Mapping[str, CapabilityResult]], Any]

    def holds(self, deps: Mapping[str, CapabilityResult]) -> bool:
        """Whether the condition holds for one text's dependency results.

        Raises ConditionEvaluationError when it cannot be evaluated on them."""
        try:
            return bool(self.evaluate(deps))
        except ConditionEvaluationError:
            raise
        except (KeyError, IndexError) as exc:
            # The key is a literal of the condition, but say only which kind of lookup failed.
            raise ConditionEvaluationError(f"{type(exc).__name__}: no such item") from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            # These messages name types and operators, never values.
            raise ConditionEvaluationError(f"{type(exc).__name__}: {exc}") from None


def _item(container: Any, key: str | int | None) -> Any:
    """`container[key]`: a result's field, a JSON object's key, or a list's item."""
    if isinstance(container, CapabilityResult):
        return _attribute(container, str(key))
    if isinstance(container, Mapping):
        return container[key]
    if isinstance(container, list | tuple | str) and isinstance(key, int):
        return container[key]
    # The key is a literal of the condition: quoting it quotes no text.
    raise ConditionEvaluationError(f"{type(container).__name__} has no item {key!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


Deps = Mapping[str, CapabilityResult]
Evaluator = Callable[[Deps], Any]


def _compile(node: ast.AST) -> Evaluator:
    """The expression as a tree of closures, built once per condition: evaluating it on a
    text's results is then a few calls, not a walk of the syntax tree with a type test per
    node (conditions and rule cases run once per text)."""
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda deps: all(part(deps) for part in parts)
        return lambda deps: any(part(deps) for part in parts)
    if isinstance(node, ast.UnaryOp):
        return _compile_unary(node.op, _compile(node.operand))
    if isinstance(node, ast.Compare):
        return _compile_compare(node)
    if isinstance(node, ast.BinOp):
        return _compile_arithmetic(node)
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda _deps: value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = [_compile(item) for item in node.elts]
        return lambda deps: [item(deps) for item in items]
    if isinstance(node, ast.Name):
        name = node.id

        def result(deps: Deps) -> Any:
            if name not in deps:
                raise ConditionEvaluationError(f"no result of '{name}'")
            return deps[name]

        return result
    if isinstance(node, ast.Attribute):
        owner, attribute = _compile(node.value), node.attr
        return lambda deps: _attribute(owner(deps), attribute)
    if isinstance(node, ast.Subscript):
        container, key = _compile(node.value), _literal_key(node.slice)
        return lambda deps: _item(container(deps), key)
    if isinstance(node, ast.Call):
        (argument,) = node.args
        sized = _compile(argument)
        return lambda deps: len(sized(deps))
    raise ConditionEvaluationError(f"unsupported expression {type(node).__name__}")


def _compile_unary(op: ast.unaryop, operand: Evaluator) -> Evaluator:
    if isinstance(op, ast.Not):
        return lambda deps: not operand(deps)
    negate = isinstance(op, ast.USub)

    def signed(deps: Deps) -> Any:
        value = operand(deps)
        if not _is_number(value):
            raise ConditionEvaluationError(f"a sign needs a number, not {type(value).__name__}")
        return -value if negate else +value

    return signed


def _compile_compare(node: ast.Compare) -> Evaluator:
    first = _compile(node.left)
    chain = [
        (_COMPARE[type(op)], _compile(comparator))
        for op, comparator in zip(node.ops, node.comparators, strict=True)
    ]

    def compare(deps: Deps) -> bool:
        left = first(deps)
        for test, comparator in chain:
            right = comparator(deps)
            if not test(left, right):
                return False
            left = right
        return True

    return compare


def _compile_arithmetic(node: ast.BinOp) -> Evaluator:
    left_of, right_of, apply = _compile(node.left), _compile(node.right), _ARITHMETIC[type(node.op)]

    def arithmetic(deps: Deps) -> Any:
        left, right = left_of(deps), right_of(deps)
        if not (_is_number(left) and _is_number(right)):
            # Numbers only: `'x' * 10**9` or `[0] * 10**9` would build a huge value.
            raise ConditionEvaluationError(
                f"arithmetic needs numbers, not {type(left).__name__} and {type(right).__name__}"
            )
        return apply(left, right)

    return arithmetic


def _check(node: ast.AST, names: set[str]) -> None:
    """Accepts only the node types `_evaluate` knows; collects the names read."""
    if isinstance(node, ast.Name):
        # A whole result compares equal to nothing a condition can write: `topic == 'x'` would
        # quietly never hold.
        raise ConditionError(
            f"'{node.id}' is a whole result: name one of its fields, as in {node.id}.label"
        )
    if isinstance(node, ast.Attribute | ast.Subscript):
        _check_lookup(node)
        if isinstance(node.value, ast.Name):
            names.add(node.value.id)
        else:
            _check(node.value, names)
        return
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise ConditionError(f"literal {node.value!r} is not allowed")
        return
    if isinstance(node, ast.Call):
        if not (
            isinstance(node.func, ast.Name)
            and node.func.id == "len"
            and len(node.args) == 1
            and not node.keywords
        ):
            raise ConditionError("the only function allowed is len(x)")
        _check(node.args[0], names)
        return
    if isinstance(node, ast.Compare | ast.BinOp | ast.UnaryOp):
        _check_operators(node)
    elif not isinstance(node, ast.BoolOp | ast.List | ast.Tuple | ast.Set):
        raise ConditionError(f"{type(node).__name__} is not allowed in a condition")
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            _check(child, names)


def _check_operators(node: ast.Compare | ast.BinOp | ast.UnaryOp) -> None:
    if isinstance(node, ast.Compare):
        unsupported = [type(op).__name__ for op in node.ops if type(op) not in _COMPARE]
    elif isinstance(node, ast.BinOp):
        unsupported = [] if type(node.op) in _ARITHMETIC else [type(node.op).__name__]
    else:
        ok = isinstance(node.op, ast.Not | ast.USub | ast.UAdd)
        unsupported = [] if ok else [type(node.op).__name__]
    if unsupported:
        raise ConditionError(f"operator {unsupported[0]} is not allowed")


def _check_lookup(node: ast.Attribute | ast.Subscript) -> None:
    """A field name or index: a literal, and never a private or dunder name."""
    if isinstance(node, ast.Attribute):
        key: str | int | None = node.attr
    else:
        key = _literal_key(node.slice)
        if key is None:
            raise ConditionError(
                "an index must be a literal string or integer, as in x['a'] or x[0]"
            )
    if isinstance(key, str) and key.startswith("_"):
        raise ConditionError(f"field '{key}' is not allowed")


def _literal_key(node: ast.AST) -> str | int | None:
    """The key of `x[...]` when it is a literal string or integer (possibly negative)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal_key(node.operand)
        return -inner if isinstance(inner, int) else None
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    return node.value if isinstance(node.value, str | int) else None


@functools.lru_cache(maxsize=512)
def parse_condition(source: str) -> Condition:
    """Parses and checks a condition; raises ConditionError saying what is wrong."""
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"is not a valid expression: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        # e.g. a NUL character, or nesting too deep for the parser
        raise ConditionError(f"is not a valid expression: {type(exc).__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ConditionError(f"has more than {MAX_NODES} parts")
    names: set[str] = set()
    _check(tree.body, names)
    try:
        evaluate = _compile(tree.body)
    except ConditionEvaluationError as exc:  # _check accepts only what _compile knows
        raise ConditionError(str(exc)) from None
    return Condition(source=source, tree=tree, names=frozenset(names), evaluate=evaluate)
