"""The `appliance` command: argv → Config → the appliance or a tool; no logic of its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from appliance.config import Config
from appliance.core.errors import ConfigError, FlowError
from appliance.observability.logging import setup

DEFAULT_CONFIGS = (Path("appliance.yaml"), Path("/etc/switchboard/appliance.yaml"))


def _config(path: str | None) -> Config:
    if path is None:
        path = os.environ.get("SWITCHBOARD_CONFIG")
    if path is None:
        found = next((p for p in DEFAULT_CONFIGS if p.exists()), None)
        return Config.load(found) if found else Config.load(None)
    return Config.load(Path(path))


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.app import Appliance

    setup(args.log_level)
    config = _config(args.config)
    app = Appliance(config)

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await app.run(stop)

    asyncio.run(main())
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    from appliance.storage import Storage

    config = _config(args.config)
    if not config.database.exists():
        print("no calls yet", file=sys.stderr)
        return 0
    calls = Storage(config.database).recent_calls(args.limit)
    if args.json:
        print(json.dumps([c.__dict__ | {"duration_s": c.duration_s} for c in calls], indent=2))
        return 0
    print(f"{'id':<26} {'from':<28} {'to':<22} {'start':<24} {'dur':>6}  {'end':<16} recording")
    for c in calls:
        dur = f"{c.duration_s:.1f}" if c.duration_s is not None else "-"
        print(f"{c.id:<26} {(c.from_uri or '')[:28]:<28} {(c.to_uri or '')[:22]:<22} {c.started_at[:23]:<24} "
              f"{dur:>6}  {(c.end_reason or 'in progress'):<16} {c.recording_path or '-'}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.rooms.tokens import TokenAuthority

    config = _config(args.config)
    tokens = TokenAuthority(config.auth.api_key, config.api_secret())
    print(tokens.mint(args.identity, args.role, room=args.room, ttl=dt.timedelta(hours=args.hours)))
    return 0


def cmd_flows_check(args: argparse.Namespace) -> int:
    from appliance.flow.loader import context_for, load_dir, load_file

    config = _config(args.config)
    paths = [Path(p) for p in args.paths] or [config.flows_dir]
    problems = []
    for path in paths:
        try:
            if path.is_dir():
                load_dir(path, config.webhooks.allowed, config.transfers.allowed)
            else:
                load_file(path, context_for(path.parent, config.webhooks.allowed, config.transfers.allowed))
        except FlowError as exc:
            problems += exc.problems
    if args.json:
        print(json.dumps([p.as_dict() for p in problems], indent=2))
    else:
        for problem in problems:
            print(problem)
        if not problems:
            print("flows OK")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance", description="Switchboard call-center appliance")
    parser.add_argument("--config", help="appliance.yaml (default: ./appliance.yaml, /etc/switchboard/appliance.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the appliance")
    run.add_argument("--log-level", default=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    run.set_defaults(func=cmd_run)
    calls = sub.add_parser("calls", help="list recent calls")
    calls.add_argument("--limit", type=int, default=20)
    calls.add_argument("--json", action="store_true")
    calls.set_defaults(func=cmd_calls)
    token = sub.add_parser("token", help="mint a signed access token")
    token.add_argument("--identity", required=True)
    token.add_argument("--role", required=True, choices=["operator", "supervisor", "admin"])
    token.add_argument("--room")
    token.add_argument("--hours", type=float, default=12)
    token.set_defaults(func=cmd_token)
    flows = sub.add_parser("flows", help="flow tools").add_subparsers(dest="flows_command", required=True)
    check = flows.add_parser("check", help="check flow files; every problem as file:line:col")
    check.add_argument("paths", nargs="*")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_flows_check)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FlowError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
