"""Reads capability YAML files and checks each definition on its own and against the others."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from capabilities.groups import QuestionGroup
from capabilities.kind_checks import (
    check_kind_fields,
    check_labels,
    check_references,
    training_data_path,
)
from capabilities.spec import CapabilitySpec, short_hash
from capabilities.templates import TemplateProblem, check_renders, compile_template
from schemas.capability import CapabilityDefinition, LabelDefinition
from schemas.config import PromptingConfig

# Which model runner each kind needs; None: the kind uses no model.
RUNNER_FOR_KIND: Mapping[str, str | None] = {
    "llm_choice": "generate",
    "llm_multilabel": "generate",
    "llm_score": "generate",
    "llm_json": "generate",
    "embedding_similarity": "pooling",
    "embedding_head": "pooling",
    "embedding_multilabel": "pooling",
    "classifier": "pooling",
    "regex": None,
    "formula": None,
    "rule": None,
}


class CapabilityConfigError(Exception):
    """One or more capability definitions are invalid. Each line names the file and capability."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid capability configuration:\n  " + "\n  ".join(problems))


def _where(path: Path, name: str | None) -> str:
    return f"{path.name}: capability '{name}'" if name else f"{path.name}"


def read_definitions(directory: Path) -> tuple[list[CapabilitySpec], list[str]]:
    """Parses every *.yaml / *.yml file; a file holds one definition or a list of them."""
    specs: list[CapabilitySpec] = []
    problems: list[str] = []
    if not directory.is_dir():
        return [], [f"capabilities directory {directory} does not exist"]
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        problems.append(f"capabilities directory {directory} holds no *.yaml file")
    for path in files:
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: not valid YAML: {exc}")
            continue
        entries = raw if isinstance(raw, list) else [raw]
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            try:
                definition = CapabilityDefinition.model_validate(entry)
            except ValidationError as exc:
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"]) or "(definition)"
                    hint = ""
                    if err["type"] == "extra_forbidden":
                        # `{description: a, b}`: YAML reads "b" as a key of its own.
                        hint = " (if it comes from a comma inside {...}, quote the value)"
                    problems.append(f"{_where(path, name)}: {field}: {err['msg']}{hint}")
                continue
            specs.append(CapabilitySpec.from_definition(definition, path))
    return specs, problems


def _check_own_fields(spec: CapabilitySpec, model_runners: Mapping[str, str]) -> list[str]:
    where = _where(spec.source, spec.name)
    d = spec.definition
    problems = [f"{where}: {p}" for p in [*check_labels(spec), *check_kind_fields(spec)]]
    needed_runner = RUNNER_FOR_KIND[spec.kind]
    if needed_runner is None:
        if d.model is not None:
            problems.append(f"{where}: kind '{spec.kind}' uses no model, but model is set")
    elif d.model is None:
        problems.append(f"{where}: kind '{spec.kind}' needs a model ({needed_runner} runner)")
    elif d.model not in model_runners:
        problems.append(
            f"{where}: unknown model '{d.model}'; configured models: {sorted(model_runners)}"
        )
    elif model_runners[d.model] != needed_runner:
        problems.append(
            f"{where}: kind '{spec.kind}' needs a model with the {needed_runner} runner, "
            f"but '{d.model}' uses the {model_runners[d.model]} runner"
        )
    if len(set(d.depends_on)) != len(d.depends_on):
        problems.append(f"{where}: depends_on lists a capability twice")
    if spec.name in d.depends_on:
        problems.append(f"{where}: depends on itself")
    return problems


def _check_rule(spec: CapabilitySpec, specs: Mapping[str, CapabilitySpec]) -> list[str]:
    where = _where(spec.source, spec.name)
    rule = spec.definition.rule
    if rule is None:
        return []
    problems: list[str] = []
    outputs = set(spec.label_names)
    if rule.default not in outputs:
        problems.append(f"{where}: rule default '{rule.default}' is not one of its labels")
    for number, case in enumerate(rule.cases):
        if case.label not in outputs:
            problems.append(
                f"{where}: rule case {number}: label '{case.label}' is not one of its labels"
            )
        if isinstance(case.when, str):
            continue  # an expression: checked with the other conditions
        for dep, condition in case.when.items():
            if dep not in spec.depends_on:
                problems.append(f"{where}: rule case {number}: '{dep}' is not in depends_on")
            elif dep in specs:
                unknown = set(condition.labels) - set(specs[dep].label_names)
                if unknown:
                    problems.append(
                        f"{where}: rule case {number}: {sorted(unknown)} are not labels of '{dep}'"
                    )
    return problems


def _check_prompt(spec: CapabilitySpec, specs: Mapping[str, CapabilitySpec]) -> list[str]:
    where = _where(spec.source, spec.name)
    prompt = spec.definition.prompt
    if prompt is None:
        return []
    dependency_labels = {
        dep: specs[dep].label_names or ("sample",) for dep in spec.depends_on if dep in specs
    }
    problems: list[str] = []
    for part, source in (
        ("instructions", prompt.instructions),
        ("cue", prompt.cue),
        ("answer_prefix", prompt.answer_prefix),
    ):
        try:
            compiled = compile_template(source)
            if "text" in compiled.variables:
                raise TemplateProblem(
                    "may not use 'text': the text is the user turn, on its own, so that every "
                    "question about it shares its prefill"
                )
            if part != "cue" and compiled.variables - {"labels"}:
                raise TemplateProblem(
                    "may only use 'labels': it must be the same for every text so that the "
                    "engine's prefix cache can reuse it (upstream results go in the cue)"
                )
            if part == "cue" and spec.definition.calibrate and "deps" in compiled.variables:
                # The prior comes from content-free inputs, which have no dependency results.
                raise TemplateProblem("uses deps, which calibrate: true does not allow")
            check_renders(compiled, spec.labels, dependency_labels, with_text=False)
        except TemplateProblem as exc:
            problems.append(f"{where}: prompt.{part} template {exc}")
    return problems


def find_cycle(depends_on: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """Returns one dependency cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in depends_on.get(node, ()):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep in depends_on and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for name in sorted(depends_on):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _groups(
    specs: Mapping[str, CapabilitySpec], prompting: PromptingConfig
) -> tuple[dict[str, QuestionGroup], list[str]]:
    """Each question group, with the instructions of its `shared` members in name order."""
    members: dict[str, list[CapabilitySpec]] = {}
    for spec in specs.values():
        if spec.uses_prompt and spec.model is not None:
            members.setdefault(spec.definition.group or spec.model, []).append(spec)
    groups: dict[str, QuestionGroup] = {}
    problems: list[str] = []
    for name, group_specs in sorted(members.items()):
        models = sorted({s.model or "" for s in group_specs})
        if len(models) > 1:
            problems.append(f"question group '{name}' mixes models {models}: one model per group")
            continue
        sections = tuple(
            (s.name, compile_template(s.definition.prompt.instructions).render(s.labels))
            for s in sorted(group_specs, key=lambda s: s.name)
            if s.definition.prompt is not None and _layout(s, prompting) == "shared"
        )
        groups[name] = QuestionGroup(
            name, models[0], sections, prompting.instructions, prompting.pad_to_block
        )
    return groups, problems


def _data_hash(spec: CapabilitySpec) -> str:
    """A hash of the training data file a head learns from ("" when none)."""
    path = training_data_path(spec)
    return short_hash(path.read_bytes().decode("utf-8", "replace")) if path else ""


def _layout(spec: CapabilitySpec, prompting: PromptingConfig) -> str:
    return prompting.layout_override or spec.definition.layout


def _finalise(
    specs: Mapping[str, CapabilitySpec],
    model_fingerprints: Mapping[str, str],
    prompting: PromptingConfig,
    groups: Mapping[str, QuestionGroup],
) -> dict[str, CapabilitySpec]:
    """Sets each question's layout and group, and each version to cover everything the output
    depends on: definition, model, prompt layout (the whole shared system part) and the
    dependencies' versions (so a change anywhere upstream changes every version downstream)."""
    done: dict[str, CapabilitySpec] = {}

    def finish(name: str) -> CapabilitySpec:
        if name in done:
            return done[name]
        spec = specs[name]
        dep_versions = [f"{dep}={finish(dep).version}" for dep in spec.depends_on]
        layout, group = None, None
        if spec.uses_prompt and spec.model is not None:
            layout = _layout(spec, prompting)
            group = groups[spec.definition.group or spec.model]
        parts = [
            spec.version,
            f"model={model_fingerprints.get(spec.model or '', spec.model or '')}",
            f"layout={layout}",
            group.fingerprint() if group is not None and layout == "shared" else "",
            f"data={_data_hash(spec)}",
            *dep_versions,
        ]
        done[name] = dataclasses.replace(
            spec,
            version=short_hash(*parts),
            layout=layout,
            group=group if layout == "shared" else None,
        )
        return done[name]

    for name in sorted(specs):
        finish(name)
    return done


def _with_model_labels(
    spec: CapabilitySpec, model_labels: Mapping[str, Sequence[str]]
) -> tuple[CapabilitySpec, list[str]]:
    """A classifier's labels are its model's (config.json id2label): filled in when the YAML
    lists none, checked against the model's when it does."""
    if spec.kind != "classifier" or spec.model is None:
        return spec, []
    where = _where(spec.source, spec.name)
    known = tuple(model_labels.get(spec.model, ()))
    if not spec.labels:
        if len(known) < 2:
            return spec, [f"{where}: model '{spec.model}' names no labels (id2label); list them"]
        labels = tuple(LabelDefinition(name=name) for name in known)
        definition = spec.definition.model_copy(update={"labels": labels})
        return CapabilitySpec.from_definition(definition, spec.source), []
    if known and tuple(spec.label_names) != known:
        return spec, [
            f"{where}: labels {list(spec.label_names)} differ from model '{spec.model}' "
            f"labels {list(known)} (same names, in the model's order)"
        ]
    if len(spec.labels) < 2:
        return spec, [f"{where}: kind 'classifier' needs at least two labels"]
    return spec, []


def load_capabilities(
    directory: Path,
    model_runners: Mapping[str, str],
    model_fingerprints: Mapping[str, str] | None = None,
    prompting: PromptingConfig | None = None,
    model_labels: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, CapabilitySpec]:
    """All capabilities of `directory`, checked; raises CapabilityConfigError with every problem.

    `model_fingerprints` (model name -> what of its configuration changes outputs) and
    `prompting` (the server's question layout settings) go into every version; `model_labels`
    (model name -> the labels a classification model was trained with) are a classifier's."""
    prompting = prompting or PromptingConfig()
    specs, problems = read_definitions(directory)
    labelled = [_with_model_labels(spec, model_labels or {}) for spec in specs]
    specs = [spec for spec, _ in labelled]
    problems += [problem for _, found in labelled for problem in found]
    by_name: dict[str, CapabilitySpec] = {}
    for spec in specs:
        if spec.name in by_name:
            first = by_name[spec.name].source.name
            problems.append(
                f"{_where(spec.source, spec.name)}: duplicate name (first defined in {first})"
            )
            continue
        by_name[spec.name] = spec
    for spec in by_name.values():
        problems += _check_own_fields(spec, model_runners)
        for dep in spec.depends_on:
            if dep not in by_name:
                problems.append(
                    f"{_where(spec.source, spec.name)}: unknown dependency '{dep}'; "
                    f"known capabilities: {sorted(by_name)}"
                )
        problems += _check_rule(spec, by_name)
        problems += _check_prompt(spec, by_name)
        where = _where(spec.source, spec.name)
        problems += [f"{where}: {p}" for p in check_references(spec, by_name)]
    cycle = find_cycle({name: spec.depends_on for name, spec in by_name.items()})
    if cycle:
        where = _where(by_name[cycle[0]].source, cycle[0])
        problems.append(f"{where}: dependency cycle {' -> '.join(cycle)}")
    if problems:
        raise CapabilityConfigError(problems)
    groups, problems = _groups(by_name, prompting)
    if problems:
        raise CapabilityConfigError(problems)
    return _finalise(by_name, model_fingerprints or {}, prompting, groups)
