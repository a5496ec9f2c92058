"""The `capserve` command: serve, prepare-models, bench, eval, classify."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from schemas.config import CapServeConfig
from server.settings import DEFAULT_CONFIG, ConfigError, load_config

log = logging.getLogger("capserve")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _serve(args: argparse.Namespace) -> int:
    from capabilities.loader import CapabilityConfigError
    from processors.model_store import ModelNotReadyError
    from processors.placement import PlacementError
    from server.api.auth.authenticator import check_auth_config
    from server.api.auth.keys import AuthConfigError
    from server.blas_threads import limit_blas_threads
    from server.observability.logging import configure_logging
    from server.runtime import Runtime
    from server.serving import serve

    config_path = _config_path(args.config)
    config = load_config(config_path)
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    configure_logging(config.server.log_format, config.server.log_level)
    if args.ray:
        return _serve_on_ray(config, config_path)
    limit_blas_threads(config.server.blas_threads)
    try:
        check_auth_config(config, os.environ)  # before any engine starts
        runtime = Runtime.build(config, config_path=config_path)  # reloads re-read its models
    except (AuthConfigError, CapabilityConfigError, ModelNotReadyError, PlacementError) as exc:
        print(f"capserve: {exc}", file=sys.stderr)
        return 2
    return serve(runtime)  # 0 after a drained shutdown, 1 when the start-up failed


def _serve_on_ray(config: CapServeConfig, config_path: Path) -> int:
    """The same app as replicas of a Ray Serve application (deploy/). What a replica would
    refuse at start (auth, capabilities, models, placement) and what this mode needs (the
    shared cache) are checked here first: exit 2, before any cluster or engine starts."""
    from capabilities.loader import CapabilityConfigError
    from processors.model_store import ModelNotReadyError
    from processors.placement import PlacementError
    from processors.pool import ProcessorPool
    from server.api.auth.authenticator import check_auth_config
    from server.api.auth.keys import AuthConfigError
    from server.registry_loading import load_registry

    try:
        from deploy.application import RayModeError, check_ray_config
        from deploy.run import serve_on_ray
    except ImportError as exc:
        print(f"capserve: --ray needs Ray Serve (pip install 'ray[serve]'): {exc}", file=sys.stderr)
        return 2
    refusals = (AuthConfigError, CapabilityConfigError, ModelNotReadyError, PlacementError)
    try:
        check_auth_config(config, os.environ)
        check_ray_config(config, os.environ)
        load_registry(config)
        assert config.models_dir is not None
        ProcessorPool(config.models, config.models_dir).check_models()
    except (*refusals, RayModeError) as exc:
        print(f"capserve: {exc}", file=sys.stderr)
        return 2
    return serve_on_ray(config, config_path)


def _config_path(given: Path | None) -> Path:
    """The config file `load_config` reads for `given`, as an absolute path."""
    return Path(given or os.environ.get("CAPSERVE_CONFIG") or DEFAULT_CONFIG).resolve()


def _hash_key(_args: argparse.Namespace) -> int:
    """Prints the hex SHA-256 of the API key read from stdin (for auth.keys[].sha256)."""
    from server.api.auth.keys import hash_key

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("API key (not echoed): ").strip()
    else:
        key = sys.stdin.readline().strip()
    if not key:
        print("capserve: hash-key reads an API key from stdin; none given", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _prepare_models(args: argparse.Namespace) -> int:
    from processors.model_store import ModelNotReadyError, prepare_model

    config = load_config(args.config)
    _setup_logging(config.server.log_level)
    assert config.models_dir is not None
    for name, model in config.models.items():
        try:
            path = prepare_model(model.source, config.models_dir)
        except ModelNotReadyError as exc:
            print(f"capserve: {exc}", file=sys.stderr)
            return 2
        where = path if path is not None else f"{model.source} (not embedded: nothing to prepare)"
        print(f"model '{name}': {where}")
    return 0


# Measurement commands: (name, help, module, its argument-adding function, its run function).
# Their modules live outside the server (bench/, evaluation/) and are imported only when used.
TOOLS = (
    ("bench", "capserve against the vllm serve pipeline, ablations, batched vs naive",
     "bench.run", "add_bench_arguments", "run_bench"),
    ("bench-layouts", "the LLM question layouts side by side",
     "bench.layouts", "add_layout_arguments", "run_layout_bench"),
    ("bench-scoring", "time the llm_choice scoring methods",
     "bench.scoring", "add_scoring_arguments", "run_scoring_bench"),
    ("bench-window", "the adaptive window at idle and saturated",
     "bench.window", "add_window_arguments", "run_window_bench"),
    ("bench-scaling", "on Ray Serve: 1 replica x 2 cores against 2 replicas x 1 core",
     "bench.scaling", "add_scaling_arguments", "run_scaling_bench"),
    ("eval", "accuracy of the capabilities on a labeled JSONL file",
     "evaluation.run", "add_eval_arguments", "run_eval"),
    ("train", "fit a head capability (embedding_head, embedding_multilabel) and save its head",
     "server.commands.train", "add_train_arguments", "run_train"),
    ("capabilities", "list the configured capabilities, or validate a capability folder",
     "server.commands.capabilities", "add_capabilities_arguments", "run_capabilities"),
    ("classify", "classify a JSONL or CSV file (resumable), through a server or in-process",
     "client.file_job.command", "add_classify_arguments", "run_classify"),
)  # fmt: skip


def _tool(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        code: int = getattr(importlib.import_module(module), function)(args)
        return code

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="YAML config (default: $CAPSERVE_CONFIG or configs/default.yaml)",
        )

    serve = sub.add_parser("serve", help="start the HTTP server")
    with_config(serve)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--ray",
        action="store_true",
        help="run as a Ray Serve application: ray.num_replicas whole runtimes behind one ingress",
    )
    serve.set_defaults(run=_serve)

    hash_key = sub.add_parser(
        "hash-key", help="print the SHA-256 of an API key read from stdin (for auth.keys)"
    )
    hash_key.set_defaults(run=_hash_key)

    prepare = sub.add_parser("prepare-models", help="prepare the embedded models (idempotent)")
    with_config(prepare)
    prepare.set_defaults(run=_prepare_models)

    for name, help_text, module, add_arguments, run in TOOLS:
        tool = sub.add_parser(name, help=help_text)
        with_config(tool)
        getattr(importlib.import_module(module), add_arguments)(tool)
        tool.set_defaults(run=_tool(module, run))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"capserve: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
