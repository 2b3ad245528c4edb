"""The ``ithelp`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bot.config import AppConfig, ConfigError, load_config
from bot.config_cli import config_path, load_or_complain

log = logging.getLogger("ithelp")


def _load_or_exit(path: Path) -> AppConfig:
    config = load_or_complain(path)
    if config is None:
        raise SystemExit(2)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    from bot.roles_explain import explain_roles
    from bot.sla_explain import explain_policies, meaning_changes

    path = config_path(args.path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for where, message in exc.problems:
            print(f"{where}: {message}")
        return 1
    from bot.knowledge.cli import folder_problems

    problems = folder_problems(config)
    for where, message in problems:
        print(f"{where}: {message}")
    if problems:
        return 1
    for warning in meaning_changes(config):
        print(f"warning: {warning}")
    if args.explain:
        print("\n".join(explain_policies(config)))
        print("\n".join(explain_roles(config)))
    print("ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.logs import configure_logging
    from bot.server import Server, serve_forever

    configure_logging(args.log_format, args.log_level)
    path = config_path(args.config)
    config = _load_or_exit(path)
    if args.socket_mode and not config.slack.app_token:
        print("--socket-mode needs slack.app_token (SLACK_APP_TOKEN, an xapp- token)", file=sys.stderr)
        return 2
    server = Server(config, host=args.host, port=args.port, replica=args.replica, socket_mode=args.socket_mode)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(args.loop)) as runner:
            runner.run(serve_forever(server))
    except OSError as exc:
        log.error("could not start: %s", exc)
        return 1
    return 0


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (``auto``): every request, database round trip and Slack call is socket
    I/O, and uvloop's C event loop takes about a quarter off the CPU each acknowledged request costs."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from store.db import Database
    from store.migrate import upgrade

    config = _load_or_exit(config_path(args.config))

    async def run() -> None:
        db = Database(config.database.url, schema=config.database.schema_name)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    print("database is up to date")
    return 0


def cmd_teams_package(args: argparse.Namespace) -> int:
    from bot.teams_package import build_teams_package

    # With --app-id and --domain the package needs no app.yaml: it is often built on a laptop, before the
    # bot is deployed. Otherwise app.yaml supplies them (the domain is server.public_url's host).
    path = config_path(args.config)
    wanted = args.app_id is None or (args.domain is None and (args.config is not None or path.exists()))
    config = _load_or_exit(path) if wanted else None
    app_id = args.app_id or (config.teams.app_id if config else "")
    if not app_id:
        print("teams-package needs an app id: set teams.app_id in app.yaml or pass --app-id", file=sys.stderr)
        return 2
    public_url = config.server.public_url if config else None
    domain = args.domain or (public_url.host if public_url else None)
    try:
        out = build_teams_package(app_id, Path(args.output), bot_domain=domain)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"wrote {out}: upload it in Teams (Apps → Manage your apps → Upload an app)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo
    from bot.logs import configure_logging

    configure_logging("text", "ERROR")
    return asyncio.run(run_demo())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ithelp", description="Self-hosted chat-ops IT help desk for Slack and Teams")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot")
    serve.add_argument("--config", help="path to app.yaml (default: $ITHELP_CONFIG or ./app.yaml)")
    serve.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port, 3978)")
    serve.add_argument("--log-format", choices=("text", "json"), default="text")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--replica", help="a name for this replica in leases and logs")
    serve.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                       help="event loop: uvloop when installed (auto, the default), or asyncio's own")
    serve.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode (SLACK_APP_TOKEN)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate app.yaml and print every problem")
    check.add_argument("path", nargs="?")
    check.add_argument("--explain", action="store_true",
                       help="say each SLA policy's targets, and who may act on tickets, in words")
    check.set_defaults(func=cmd_check_config)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    db_upgrade.add_argument("--config")
    db_upgrade.set_defaults(func=cmd_db_upgrade)
    from bot.privacy_cli import add_backup_parser, add_privacy_parsers

    add_backup_parser(db_sub)

    teams = sub.add_parser("teams-package", help="build the Teams app package (zip)")
    teams.add_argument("--config")
    teams.add_argument("--app-id")
    teams.add_argument("--domain", help="the bot's public host name, e.g. ithelp.example.com "
                       "(default: the host of server.public_url in app.yaml)")
    teams.add_argument("--output", default="ithelp-teams.zip")
    teams.set_defaults(func=cmd_teams_package)

    demo = sub.add_parser("demo", help="play a compressed day against local Slack/Teams/PagerDuty stand-ins")
    demo.set_defaults(func=cmd_demo)

    from surveys.report import add_report_parser

    add_report_parser(sub)
    add_privacy_parsers(sub)
    from bot.outbox_cli import add_outbox_parser

    add_outbox_parser(sub)
    from bot.timers_cli import add_timers_parser

    add_timers_parser(sub)
    from bot.knowledge.cli import add_kb_parser

    add_kb_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
