"""The CapabilityRegistry: every known capability, and the order they run in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from capabilities.loader import load_capabilities
from capabilities.spec import CapabilitySpec
from schemas.config import PromptingConfig

# A capability name echoed in an error message is cut to this many characters: a client's
# string is never sent back, or logged, whole.
ECHOED_NAME_CHARS = 64


def shown_name(name: str) -> str:
    """`name` quoted for an error message, cut to ECHOED_NAME_CHARS characters."""
    if len(name) <= ECHOED_NAME_CHARS:
        return repr(name)
    return repr(name[:ECHOED_NAME_CHARS]) + f"... ({len(name)} characters)"


def shown_names(names: Iterable[str], most: int = 10) -> str:
    """At most `most` names, each cut by shown_name, and how many more there are."""
    names = list(names)
    shown = ", ".join(shown_name(name) for name in names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


class UnknownCapabilityError(ValueError):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        self.unknown = unknown
        self.known = known
        super().__init__(
            f"unknown capability {shown_names(unknown)}; valid capabilities: {', '.join(known)}"
        )


class CapabilityRegistry:
    def __init__(self, specs: Mapping[str, CapabilitySpec]) -> None:
        self._specs = dict(specs)
        self._order = self._topological_order()
        self._position = {name: i for i, name in enumerate(self._order)}

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        model_runners: Mapping[str, str],
        model_fingerprints: Mapping[str, str] | None = None,
        prompting: PromptingConfig | None = None,
        model_labels: Mapping[str, Sequence[str]] | None = None,
    ) -> CapabilityRegistry:
        return cls(
            load_capabilities(directory, model_runners, model_fingerprints, prompting, model_labels)
        )

    def _topological_order(self) -> list[str]:
        """Dependencies before dependents; ties broken by name, so the order is stable."""
        order: list[str] = []
        done: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            for dep in sorted(self._specs[name].depends_on):
                visit(dep)
            done.add(name)
            order.append(name)

        for name in sorted(self._specs):
            visit(name)
        return order

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[CapabilitySpec]:
        return [self._specs[name] for name in self._order]

    def get(self, name: str) -> CapabilitySpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownCapabilityError([name], self.names()) from None

    def check_known(self, names: Iterable[str]) -> None:
        unknown = sorted({n for n in names if n not in self._specs})
        if unknown:
            raise UnknownCapabilityError(unknown, self.names())

    def resolve(self, requested: Iterable[str]) -> list[str]:
        """The requested capabilities plus everything they depend on, dependencies first."""
        wanted = list(requested)
        self.check_known(wanted)
        closure: set[str] = set()
        stack = wanted
        while stack:
            name = stack.pop()
            if name not in closure:
                closure.add(name)
                stack.extend(self._specs[name].depends_on)
        return sorted(closure, key=self._position.__getitem__)
