"""The docs check, fast half: every page is reachable from the README, every link and anchor
resolves, every `make`, `capserve` and `curl` command names what exists (a Makefile target and
its variables, a subcommand and its flags, a route), every environment override names a config
key, and every Python example compiles. The other half runs the commands
(tests/integration/test_docs_commands.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel

from capabilities.registry import CapabilityRegistry
from schemas.config import CapServeConfig, ModelConfig
from server.api.app import create_app
from server.cli import build_parser
from server.runtime import Runtime
from server.settings import load_config
from tests import docs_check
from tests.docs_check import REPO, Command
from tests.unit.fakes import FakePool

COMMANDS = docs_check.all_commands()
PAGES = docs_check.pages()
MAKEFILE = (REPO / "Makefile").read_text()


def _ids(commands: list[Command]) -> list[str]:
    return [f"{c.page}:{c.source[:60]}" for c in commands]


def of(program: str, fenced: bool | None = None) -> list[Command]:
    return [c for c in COMMANDS if c.program == program and (fenced is None or c.fenced == fenced)]


def test_the_docs_hold_commands_of_every_kind_checked() -> None:
    assert len(of("make")) >= 10
    assert len(of("capserve", fenced=True)) >= 10
    assert len(of("curl", fenced=True)) >= 3


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme_links = set(docs_check.links(REPO / "README.md"))
    pages = sorted((REPO / "docs").glob("*.md"))
    assert pages
    for page in pages:
        assert any(link.split("#")[0] == f"docs/{page.name}" for link in readme_links), page.name


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_and_anchor_resolves(page: Path) -> None:
    for link in docs_check.links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} points at nothing"
        if anchor:
            assert path.suffix == ".md", link
            assert anchor in docs_check.anchors(path), f"{page.name}: no heading for {link}"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", MAKEFILE, re.M))


@pytest.mark.parametrize("command", of("make"), ids=_ids(of("make")))
def test_make_commands_name_real_targets_and_variables(command: Command) -> None:
    targets = _make_targets()
    for arg in command.argv[1:]:
        if "=" in arg:
            variable = arg.split("=", 1)[0]
            assert re.search(rf"\b{variable}\b", MAKEFILE), f"the Makefile has no {variable}"
        else:
            assert arg in targets, f"the Makefile has no target {arg!r}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("capserve has no subcommands")


@pytest.mark.parametrize(
    "command", of("capserve", fenced=True), ids=_ids(of("capserve", fenced=True))
)
def test_fenced_capserve_commands_parse(command: Command) -> None:
    """A full invocation in a fenced block parses with capserve's own parser (no unknown
    subcommand, flag or value)."""
    try:
        build_parser().parse_args(list(command.argv[1:]))
    except SystemExit as exc:  # argparse's error exit
        pytest.fail(f"{command.page}: `{command.source}` does not parse (exit {exc.code})")


@pytest.mark.parametrize(
    "command", of("capserve", fenced=False), ids=_ids(of("capserve", fenced=False))
)
def test_capserve_commands_in_the_prose_name_real_subcommands_and_flags(
    command: Command,
) -> None:
    subcommands = _subparsers(build_parser())
    name = command.argv[1]
    assert name in subcommands, f"{command.page}: capserve has no subcommand {name!r}"
    parser = subcommands[name]
    flags = {flag for action in parser._actions for flag in action.option_strings}
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for nested_action in nested:
        for sub in nested_action.choices.values():
            flags |= {flag for action in sub._actions for flag in action.option_strings}
    for arg in command.argv[2:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in flags, f"{command.page}: capserve {name} has no {arg}"


def _routes() -> set[tuple[str, str]]:
    config = CapServeConfig(models={"smollm2": ModelConfig(source="x", runner="generate")})
    app = create_app(Runtime(config, CapabilityRegistry({}), FakePool()))
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        for method in getattr(route, "methods", None) or ():
            found.add((method, str(getattr(route, "path", ""))))
    return found


def _curl_request(command: Command) -> tuple[str, str]:
    argv = list(command.argv[1:])
    method = "GET"
    url = ""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-X") and len(arg) > 2:
            method = arg[2:]
        elif arg in ("-X", "--request"):
            method = argv[i + 1]
            i += 1
        elif arg in ("-d", "--data", "--data-binary", "-H", "--header", "-o", "-w", "-u"):
            if arg in ("-d", "--data", "--data-binary") and method == "GET":
                method = "POST"
            i += 1
        elif not arg.startswith("-"):
            url = arg
        i += 1
    return method, url


@pytest.mark.parametrize("command", of("curl", fenced=True), ids=_ids(of("curl", fenced=True)))
def test_curl_commands_call_real_routes_of_the_default_address(command: Command) -> None:
    method, url = _curl_request(command)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    assert parts.netloc == "localhost:8000", f"{command.page}: {url} is not the default address"
    assert (method, parts.path) in _routes(), f"{command.page}: no route {method} {parts.path}"


def _config_has(path: list[str]) -> bool:
    """Whether `path` (an override's parts) is a key of the default config; a part inside a map
    is one of its names (models.<name>), or any name in a free-form map (engine_env)."""
    node: object = load_config(REPO / "configs/default.yaml", {})
    for i, part in enumerate(path):
        if isinstance(node, dict):
            if part not in node:
                return (
                    all(not isinstance(v, BaseModel) for v in node.values()) and i == len(path) - 1
                )
            node = node[part]
            continue
        fields = getattr(type(node), "model_fields", None)
        if fields is None or part not in fields:
            return False
        node = getattr(node, part)
    return True


def test_every_documented_environment_override_names_a_config_key() -> None:
    text = "\n".join(page.read_text() for page in PAGES)
    # CAPSERVE__SECTION__KEY is how the docs spell the rule itself.
    overrides = set(re.findall(r"\bCAPSERVE__([A-Z0-9_]+)", text)) - {"SECTION__KEY"}
    assert overrides
    for override in overrides:
        path = [part.lower() for part in override.split("__") if part]
        assert _config_has(path), f"CAPSERVE__{override} names no config key"


PYTHON = [e for e in docs_check.all_examples() if e.language == "python"]


@pytest.mark.parametrize("example", PYTHON, ids=[e.page for e in PYTHON])
def test_python_examples_compile(example: docs_check.Example) -> None:
    compile(example.code, example.page, "exec")
