"""``clusterlink-gateway``: run the daemon, or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvloop

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, ConfigError, check_runtime, load_config
from ..daemon import Daemon, StartupError
from ..logs import setup_logging
from ..peering.tuning import tune_malloc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clusterlink-gateway", description="ClusterLink gateway daemon"
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, help="configuration file (YAML)"
    )
    parser.add_argument(
        "--check-config",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        help="validate the configuration (FILE, or --config) and exit; non-zero when invalid",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 1
    problems = check_runtime(config)
    for problem in problems:
        print(f"invalid configuration: {path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: configuration is valid (peer {config.peer_name})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config:
        path = args.config if args.check_config is True else Path(args.check_config)
        return check_config(path)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"clusterlink-gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format, config.log.audit)
    tune_malloc()
    daemon = Daemon(args.config, config)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(daemon.run())
    except StartupError as exc:
        print(f"clusterlink-gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
