"""``salon serve`` and ``salon sfu``: one ``salon`` entry point starts every component, so
these two commands are the only client modules that import the server (``spaces``) or the
SFU (``sfu``), and only when run (tests/test_layout.py)."""

from __future__ import annotations

import argparse
import logging

from client.cli.main import run
from client.core.errors import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    from spaces.app import serve
    from spaces.config import ConfigError, config_problem, load_config

    config = load_config(args.config)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.data is not None:
        config.server.data_dir = args.data
    if (problem := config_problem(config)) is not None:  # the options, checked alike
        raise ConfigError(problem)
    # Only our own packages log at the configured level: libraries such as aiosqlite log
    # SQL parameters (invite ids, records) at debug, which must never reach the log.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for package in ("spaces", "sfu"):
        logging.getLogger(package).setLevel(config.server.log_level.upper())
    use_ice_hosts(config.sfu.ice_hosts)
    run(serve(config))
    return 0


def use_ice_hosts(addresses: list[str]) -> None:
    """Media addresses an SFU node offers: the config's, unless $SALON_ICE_HOSTS says."""
    from rtc.aiortc_adapter import apply_ice_env, restrict_ice_host_addresses

    if addresses:
        restrict_ice_host_addresses(addresses)
    apply_ice_env()


def cmd_sfu(args: argparse.Namespace) -> int:
    from sfu.standalone import NodeConfigError, run_standalone
    from spaces.config import load_config

    config = load_config(args.config)
    sfu = config.sfu
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("sfu").setLevel(config.server.log_level.upper())
    try:
        run(
            run_standalone(
                sfu.server_urls or sfu.server_url,
                sfu.node_secret,
                args.host if args.host is not None else sfu.host,
                args.port if args.port is not None else sfu.port,
                sfu.node_name,
                sfu.ice_hosts,
                sfu.load_report_seconds,
                sfu.public_address,
                config.metrics.token if config.metrics.enabled else None,
                sfu.orphan_grace_seconds,
            )
        )
    except NodeConfigError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot start the SFU node: {exc.strerror or exc}") from None
    return 0


def cmd_migrate_storage(args: argparse.Namespace) -> int:
    """``salon admin migrate-storage``: copy a SQLite deployment into PostgreSQL, verified
    (:mod:`spaces.storage.transfer`)."""
    from client.cli.main import emit_json
    from spaces.storage.transfer import TransferError, migrate, summary_lines

    report = run(migrate(args.source, args.target, verify_only=args.verify_only))
    if args.json and not report.problems:
        emit_json(report.document())
    elif not report.problems:
        print("\n".join(summary_lines(report)))
    if report.problems:
        more = len(report.problems) - 1
        also = f" (and {more} more difference{'s' if more > 1 else ''})" if more else ""
        raise TransferError(f"verification failed: {report.problems[0]}{also}")
    return 0
