"""The ``smartswitch`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from smartswitch.config import ConfigError, NodeConfig, load_config, parse_hostport


def _hostport(text: str) -> str:
    try:
        parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start a node")
    run.add_argument("--config", type=Path, help="TOML node configuration")
    run.add_argument("--data-dir", type=Path, help="where the node keeps its data")
    run.add_argument("--sip-listen", type=_hostport, metavar="HOST:PORT")
    run.add_argument("--http-listen", type=_hostport, metavar="HOST:PORT")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


def _apply_flags(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    for key in ("data_dir", "sip_listen", "http_listen", "log_level"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(config, key, value)
    return config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run_loop(coro: object) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.Runner()
    with runner:
        runner.run(coro)  # type: ignore[arg-type]


def cmd_run(args: argparse.Namespace) -> int:
    from smartswitch.node import Node

    config = _apply_flags(load_config(args.config), args)
    _setup_logging(config.log_level)
    config.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        await Node(config).run()

    _run_loop(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
    except ConfigError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
