"""The `capserve` command: serve, prepare-models, bench, eval."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.settings import ConfigError, load_config

log = logging.getLogger("capserve")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from capabilities.loader import CapabilityConfigError
    from processors.model_store import ModelNotReadyError
    from server.api.app import create_app
    from server.runtime import Runtime

    config = load_config(args.config)
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    _setup_logging(config.server.log_level)
    try:
        runtime = Runtime.build(config)
    except (CapabilityConfigError, ModelNotReadyError) as exc:
        print(f"capserve: {exc}", file=sys.stderr)
        return 2
    app = create_app(runtime)
    uvicorn.run(
        app, host=config.server.host, port=config.server.port, log_level=config.server.log_level
    )
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


def _bench(args: argparse.Namespace) -> int:
    from bench.run import run_bench

    return run_bench(args)


def _bench_layouts(args: argparse.Namespace) -> int:
    from bench.layouts import run_layout_bench

    return run_layout_bench(args)


def _bench_scoring(args: argparse.Namespace) -> int:
    from bench.scoring import run_scoring_bench

    return run_scoring_bench(args)


def _bench_window(args: argparse.Namespace) -> int:
    from bench.window import run_window_bench

    return run_window_bench(args)


def _eval(args: argparse.Namespace) -> int:
    from evaluation.run import run_eval

    return run_eval(args)


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
    serve.set_defaults(run=_serve)

    prepare = sub.add_parser("prepare-models", help="prepare the embedded models (idempotent)")
    with_config(prepare)
    prepare.set_defaults(run=_prepare_models)

    bench = sub.add_parser("bench", help="batched vs naive, side by side, on a started server")
    with_config(bench)
    from bench.run import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)

    layouts = sub.add_parser("bench-layouts", help="the LLM question layouts side by side")
    with_config(layouts)
    from bench.layouts import add_layout_arguments

    add_layout_arguments(layouts)
    layouts.set_defaults(run=_bench_layouts)

    scoring = sub.add_parser("bench-scoring", help="time the llm_choice scoring methods")
    with_config(scoring)
    from bench.scoring import add_scoring_arguments

    add_scoring_arguments(scoring)
    scoring.set_defaults(run=_bench_scoring)

    window = sub.add_parser("bench-window", help="the adaptive window at idle and saturated")
    with_config(window)
    from bench.window import add_window_arguments

    add_window_arguments(window)
    window.set_defaults(run=_bench_window)

    evaluate = sub.add_parser("eval", help="accuracy of the capabilities on a labeled JSONL file")
    with_config(evaluate)
    from evaluation.run import add_eval_arguments

    add_eval_arguments(evaluate)
    evaluate.set_defaults(run=_eval)
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
