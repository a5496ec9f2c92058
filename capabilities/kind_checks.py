"""Checks of the fields that belong to one kind: each returns problems, never raises.

The loader runs them for every definition; problems name the file and the capability.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from capabilities.conditions import ConditionError, parse_condition
from capabilities.formulas import input_refs
from capabilities.rules import RULE_DETAIL_KEYS
from capabilities.spec import CapabilitySpec
from schemas.capability import HEAD_KINDS, PROMPT_KINDS, LabelDefinition

# Kinds whose answer is one label out of several, with a probability each.
SINGLE_LABEL_KINDS = ("llm_choice", "embedding_similarity", "embedding_head", "classifier", "rule")
# Kinds whose answer is every label that passes its own threshold.
MULTILABEL_KINDS = ("llm_multilabel", "embedding_multilabel")
# Kinds that take no labels at all.
UNLABELLED_KINDS = ("llm_score", "llm_json", "formula")


def walk_labels(labels: Sequence[LabelDefinition]) -> Iterator[LabelDefinition]:
    """Every label of a taxonomy, parents before children."""
    for label in labels:
        yield label
        yield from walk_labels(label.children)


def check_labels(spec: CapabilitySpec) -> list[str]:
    d = spec.definition
    names = [label.name for label in walk_labels(d.labels)]
    problems: list[str] = []
    if len(set(names)) != len(names):
        problems.append(f"labels are not unique (a taxonomy's names too): {names}")
    if spec.kind in UNLABELLED_KINDS and d.labels:
        problems.append(f"kind '{spec.kind}' takes no labels")
    elif spec.kind in (*MULTILABEL_KINDS, "regex") and not d.labels:
        problems.append(f"kind '{spec.kind}' needs at least one label")
    elif spec.kind in SINGLE_LABEL_KINDS and spec.kind != "classifier" and len(d.labels) < 2:
        problems.append(f"kind '{spec.kind}' needs at least two labels")
    if spec.kind == "llm_multilabel":
        missing = [label.name for label in d.labels if label.question is None]
        if missing:
            problems.append(f"labels {missing} need a `question` (kind llm_multilabel)")
    elif any(label.question is not None for label in d.labels):
        problems.append("a label `question` is only used by kind 'llm_multilabel'")
    if any(label.children for label in d.labels):
        if spec.kind != "embedding_similarity":
            problems.append("label `children` (a taxonomy) need kind 'embedding_similarity'")
        for label in walk_labels(d.labels):
            if len(label.children) == 1:
                problems.append(f"label '{label.name}' has one child: a level needs two or more")
    problems += _check_patterns(spec)
    values = [label.value for label in d.labels]
    if any(value is not None for value in values):
        if spec.kind not in SINGLE_LABEL_KINDS or spec.kind == "rule":
            problems.append("label `value` is only used by single-label model kinds")
        elif any(value is None for value in values):
            problems.append("label `value`: give every label a value, or none")
    return problems


def _check_patterns(spec: CapabilitySpec) -> list[str]:
    problems: list[str] = []
    for label in spec.definition.labels:
        has_pattern = label.pattern is not None or label.builtin is not None
        if spec.kind != "regex":
            if has_pattern:
                problems.append(f"label '{label.name}': pattern/builtin need kind 'regex'")
            continue
        if (label.pattern is None) == (label.builtin is None):
            problems.append(f"label '{label.name}': give exactly one of `pattern` and `builtin`")
        elif label.pattern is not None:
            try:
                compiled = re.compile(label.pattern)
            except re.error as exc:
                problems.append(f"label '{label.name}': pattern is not a valid regex: {exc}")
                continue
            if compiled.fullmatch(""):
                problems.append(f"label '{label.name}': pattern matches the empty string")
    return problems


def check_kind_fields(spec: CapabilitySpec) -> list[str]:
    """Fields that only some kinds use, set on the wrong kind or missing on the right one."""
    d = spec.definition
    problems: list[str] = []
    uses = {
        "group": (d.group is not None, PROMPT_KINDS),
        "prompt": (d.prompt is not None, PROMPT_KINDS),
        "rule": (d.rule is not None, ("rule",)),
        "training": (d.training is not None, HEAD_KINDS),
        "output_schema": (d.output_schema is not None, ("llm_json",)),
        "label_field": (d.label_field is not None, ("llm_json",)),
        "formula": (d.formula is not None, ("formula",)),
        "prototype": (d.prototype != "nearest", ("embedding_similarity",)),
        "top_two_fields": (d.top_two_fields, SINGLE_LABEL_KINDS),
    }
    for field, (is_set, kinds) in uses.items():
        if is_set and spec.kind not in kinds:
            problems.append(f"{field} is only used by kind(s) {', '.join(kinds)}")
    needed = {
        "prompt": (d.prompt is None, PROMPT_KINDS),
        "rule": (d.rule is None, ("rule",)),
        "output_schema": (d.output_schema is None, ("llm_json",)),
        "formula": (d.formula is None, ("formula",)),
    }
    for field, (missing, kinds) in needed.items():
        if missing and spec.kind in kinds:
            problems.append(f"kind '{spec.kind}' needs `{field}`")
    # llm_choice divides out the prompt's label prior; the embedding kinds fit their softmax
    # temperature (embedding_similarity) or are calibrated by their logistic fit (embedding_head).
    calibrated_kind = spec.kind in ("embedding_similarity", "embedding_head") or (
        spec.kind == "llm_choice" and d.scoring != "choice"
    )
    if d.calibrate and not calibrated_kind:
        problems.append(
            "calibrate needs kind 'llm_choice' with probability scoring, 'embedding_similarity' "
            "or 'embedding_head'"
        )
    if spec.kind == "llm_json" and d.output_schema is not None:
        problems += _check_output_schema(spec)
    if spec.kind in HEAD_KINDS:
        problems += _check_training(spec)
    if d.rule is not None:
        problems += _check_rule_details(spec)
    if d.formula is not None and d.formula.clip is not None:
        low, high = d.formula.clip
        if low > high:
            problems.append(f"formula.clip: the low bound {low} is above the high bound {high}")
    return problems


def _check_rule_details(spec: CapabilitySpec) -> list[str]:
    rule = spec.definition.rule
    if rule is None:
        return []
    problems: list[str] = []
    sources = [(f"rule case {n}", case.details) for n, case in enumerate(rule.cases)]
    for where, details in [*sources, ("rule default_details", rule.default_details)]:
        reserved = sorted(set(details) & set(RULE_DETAIL_KEYS))
        if reserved:
            problems.append(f"{where}: details may not use {reserved} (the rule writes them)")
    return problems


def _check_output_schema(spec: CapabilitySpec) -> list[str]:
    import jsonschema

    schema = spec.definition.output_schema or {}
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"output_schema is not a valid JSON schema: {exc.message}"]
    if schema.get("type") != "object":
        return ["output_schema must describe an object (type: object)"]
    field = spec.definition.label_field
    if field is not None:
        prop = schema.get("properties", {}).get(field)
        if not isinstance(prop, Mapping) or prop.get("type") != "string":
            return [f"label_field '{field}' must be a string property of output_schema"]
    return []


def training_data_path(spec: CapabilitySpec) -> Path | None:
    """The JSONL file of a head's examples, beside its YAML file."""
    training = spec.definition.training
    if training is None or training.data is None:
        return None
    return spec.source.parent / training.data


def _check_training(spec: CapabilitySpec) -> list[str]:
    path = training_data_path(spec)
    has_examples = any(label.examples for label in spec.definition.labels)
    if path is None and not has_examples:
        return [f"kind '{spec.kind}' needs examples: training.data or the labels' examples"]
    if path is not None and not path.is_file():
        return [f"training.data: {path.name} is not a file beside {spec.source.name}"]
    return []


def check_references(spec: CapabilitySpec, specs: Mapping[str, CapabilitySpec]) -> list[str]:
    """`when`, rule expressions and formula terms may only read declared dependencies."""
    d = spec.definition
    problems: list[str] = []
    expressions: list[tuple[str, str]] = []
    if d.when is not None:
        expressions.append(("when", d.when))
    if d.rule is not None:
        expressions += [
            (f"rule case {n}", case.when)
            for n, case in enumerate(d.rule.cases)
            if isinstance(case.when, str)
        ]
    for where, source in expressions:
        try:
            condition = parse_condition(source)
        except ConditionError as exc:
            problems.append(f"{where}: condition {exc}")
            continue
        unknown = sorted(condition.names - set(d.depends_on))
        if unknown:
            problems.append(
                f"{where}: condition reads {unknown}, which are not in depends_on "
                f"({list(d.depends_on)})"
            )
    if d.formula is not None:
        problems += _check_formula_inputs(spec, specs)
    return problems


def _check_formula_inputs(spec: CapabilitySpec, specs: Mapping[str, CapabilitySpec]) -> list[str]:
    formula = spec.definition.formula
    if formula is None:
        return []
    problems: list[str] = []
    for ref in input_refs(formula):
        dep = specs.get(ref.dep)
        if ref.dep not in spec.depends_on:
            problems.append(f"formula: '{ref.ref}' reads '{ref.dep}', which is not in depends_on")
        elif dep is None:
            continue  # an unknown dependency: reported by the loader
        elif ref.field is None and not has_score(dep):
            problems.append(
                f"formula: '{ref.ref}' has no score (kind {dep.kind}); name a field, "
                f"as in '{ref.dep}.<field>'"
            )
        elif ref.field is not None:
            known = numeric_fields(dep)
            if known is not None and ref.field not in known:
                problems.append(
                    f"formula: '{ref.ref}': '{ref.dep}' has no number field '{ref.field}' "
                    f"(it has {sorted(known)})"
                )
    total = formula.field or spec.name
    if total in {ref.reported_as for ref in input_refs(formula)}:
        problems.append(f"formula: the total's field '{total}' is also an input's field")
    return problems


def has_score(spec: CapabilitySpec) -> bool:
    """Whether the capability's results carry a score: llm_score and formula always, a
    single-label model kind when every label has a value."""
    if spec.kind in ("llm_score", "formula"):
        return True
    values = [label.value for label in spec.labels]
    model_kind = spec.kind in SINGLE_LABEL_KINDS and spec.kind != "rule"
    return model_kind and bool(values) and all(value is not None for value in values)


def numeric_fields(spec: CapabilitySpec) -> frozenset[str] | None:
    """The number fields of the capability's results, or None when they are not known before
    it runs (an llm_json schema without properties, a kind this module does not know)."""
    d = spec.definition
    if spec.kind == "regex":
        return frozenset({"count"})
    if spec.kind == "formula" and d.formula is not None:
        inputs = {ref.reported_as for ref in input_refs(d.formula)}
        return frozenset({d.formula.field or spec.name, *inputs})
    if spec.kind == "llm_json" and d.output_schema is not None:
        properties = d.output_schema.get("properties")
        if not isinstance(properties, Mapping):
            return None
        return frozenset(
            name
            for name, prop in properties.items()
            if isinstance(prop, Mapping) and _is_numeric_type(prop.get("type"))
        )
    return None


def _is_numeric_type(json_type: object) -> bool:
    """A JSON schema `type` (a name or a list of names) that admits a number or a boolean."""
    names = json_type if isinstance(json_type, list) else [json_type]
    return any(name in ("number", "integer", "boolean") for name in names)
