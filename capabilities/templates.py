"""Prompt templates of LLM capabilities: sandboxed Jinja, checked when capabilities load."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from capabilities.results import CapabilityResult
from schemas.capability import LabelDefinition

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class TemplateProblem(Exception):
    """A template that cannot be used; the message says why."""


@dataclass(frozen=True)
class LabelView:
    """One item of `labels` inside a template: prints as its name, and has `.description`."""

    name: str
    description: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class DependencyView:
    """What a template sees of one dependency result: `deps.<name>.label`, `.confidence`,
    `.score`, `.labels`, `.path`, `.fields`, and any other name is read from `fields` (an
    llm_json object's properties, a formula's inputs, regex matches), as conditions read them.

    A field the result does not have renders as empty (and is false, and not `defined`): which
    fields an upstream result holds is only known per text (an llm_json property may be
    optional), and the load check renders with sample results that hold none."""

    label: str | None
    confidence: float
    score: float | None = None
    labels: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: those are the result's fields.
        if name.startswith("_"):
            raise AttributeError(name)
        return _Fields(self.fields)[name]

    @classmethod
    def of(cls, result: CapabilityResult) -> DependencyView:
        return cls(
            label=result.label,
            confidence=result.confidence,
            score=result.score,
            labels=result.labels or (),
            path=result.path or (),
            fields=_Fields(result.fields or {}),
        )


class _Fields(dict[str, Any]):
    """A result's fields in a template: a missing one is empty (see DependencyView)."""

    def __missing__(self, name: str) -> Any:
        return jinja2.ChainableUndefined(name=name, hint=f"the result has no field '{name}'")


class _Dependencies:
    """`deps.<name>` inside a template: only the declared dependencies exist."""

    def __init__(self, results: Mapping[str, DependencyView]) -> None:
        self._results = dict(results)

    def __getattr__(self, name: str) -> DependencyView:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._results[name]
        except KeyError:
            raise TemplateProblem(
                f"uses deps.{name}, which is not in depends_on ({sorted(self._results)})"
            ) from None

    def __getitem__(self, name: str) -> DependencyView:
        return self.__getattr__(name)


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    template: jinja2.Template
    variables: frozenset[str]

    def render(
        self,
        labels: Sequence[LabelDefinition],
        text: str | None = None,
        deps: Mapping[str, CapabilityResult] | None = None,
    ) -> str:
        views = {name: DependencyView.of(result) for name, result in (deps or {}).items()}
        label_views = [LabelView(label.name, label.description or "") for label in labels]
        context: dict[str, object] = {"labels": label_views, "deps": _Dependencies(views)}
        if text is not None:
            context["text"] = text
        return self.template.render(context)


@functools.lru_cache(maxsize=1024)
def compile_template(source: str) -> CompiledTemplate:
    """Parses and checks a template once per source; prompts render it per text, so the
    compiled template is kept (a failed compile raises again each time)."""
    try:
        parsed = _ENV.parse(source)
        template = _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"syntax error on line {exc.lineno}: {exc.message}") from None
    variables = frozenset(meta.find_undeclared_variables(parsed))
    unknown = variables - {"text", "labels", "deps"}
    if unknown:
        raise TemplateProblem(
            f"uses unknown variable(s) {sorted(unknown)}; available: text, labels, deps"
        )
    return CompiledTemplate(source=source, template=template, variables=variables)


def check_renders(
    template: CompiledTemplate,
    labels: Sequence[LabelDefinition],
    dependency_labels: Mapping[str, Sequence[str]],
    with_text: bool,
) -> None:
    """Renders once with sample values, so that errors show at load time, not per request."""
    sample_deps = {
        name: CapabilityResult(name, "sample", dep_labels[0], 1.0, {dep_labels[0]: 1.0})
        for name, dep_labels in dependency_labels.items()
    }
    try:
        template.render(labels, "sample text" if with_text else None, sample_deps)
    except TemplateProblem:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"cannot be rendered: {exc}") from None
    except Exception as exc:  # a template may raise anything while rendering
        raise TemplateProblem(f"cannot be rendered: {type(exc).__name__}: {exc}") from None
