"""The `appliance` command: argv → Config → the appliance or a tool; no logic of its own."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.config import Config
from appliance.core.errors import AccountError, AlreadyRunningError, ConfigError, FlowError, MaintenanceError
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
        recording = "(pruned)" if c.recording_pruned_at else c.recording_path or "-"
        print(f"{c.id:<26} {(c.from_uri or '')[:28]:<28} {(c.to_uri or '')[:22]:<22} {c.started_at[:23]:<24} "
              f"{dur:>6}  {(c.end_reason or 'in progress'):<16} {recording}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.rooms.tokens import TokenAuthority

    config = _config(args.config)
    tokens = TokenAuthority(config.auth.api_key, config.api_secret())
    print(tokens.mint(args.identity, args.role, room=args.room, ttl=dt.timedelta(hours=args.hours)))
    return 0


def _api_url(config: Config) -> str:
    """The running appliance's plain-HTTP API as seen from this box."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.http.host, config.http.host)
    return f"http://[{host}]:{config.http.port}" if ":" in host else f"http://{host}:{config.http.port}"


def cmd_drain(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.console.drain import drain, undrain
    from appliance.rooms.tokens import TokenAuthority

    config = _config(args.config)
    # Minted here from the config's secret, as `appliance token` does: whoever can read the config is an admin.
    token = TokenAuthority(config.auth.api_key, config.api_secret()).mint(
        "appliance-drain", "admin", ttl=dt.timedelta(seconds=args.timeout + 600))

    def say(line: str) -> None:
        print(f"appliance drain: {line}", flush=True)

    if args.cancel:
        return int(asyncio.run(undrain(_api_url(config), token, say)))
    return int(asyncio.run(drain(_api_url(config), token, args.timeout, say)))


def cmd_recordings_prune(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.core.clock import utcnow
    from appliance.recording.retention import prune
    from appliance.storage import Storage

    setup("ERROR")  # the command prints its own result
    config = _config(args.config)
    if not config.database.exists():
        print("no calls yet: nothing to prune")
        return 0
    report = prune(Storage(config.database), config.recordings_dir, dt.timedelta(days=args.older_than), utcnow(),
                   dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for item in report.pruned:
        gone = " (file already gone)" if item.missing else ""
        print(f"{verb} {item.audio.path} ({item.audio.kind} of call {item.audio.call_id}, "
              f"{item.size} bytes){gone}")
    for audio in report.outside:
        print(f"kept {audio.path}: outside recordings_dir {config.recordings_dir}", file=sys.stderr)
    print(f"{verb} {len(report.pruned)} files of {report.calls} calls ended before {report.cutoff}: "
          f"{report.size} bytes ({report.size / 1e6:.1f} MB)")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from appliance.core.clock import utcnow
    from appliance.storage.backup import backup

    config = _config(args.config)
    made = backup(config.database, Path(args.dest), utcnow(), keep=args.keep)
    for old in made.removed:
        print(f"removed {old}")
    print(made.path)
    return 0


def _at_least(low: float, kind: type = float, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number >= low (> low with `above`), else a one-line usage error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}"
                                             ) from None
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if above else 'at least'} {low:g}, not {text}")
        return value

    return parse


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


def _flows(config: Config):
    from appliance.flow.loader import load_dir

    setup("ERROR")  # tools print their own results; only real trouble goes to the log
    return load_dir(config.flows_dir, config.webhooks.allowed, config.transfers.allowed)


def _text_personas(config: Config):
    """Personas in text mode, for the simulator and flow tests."""

    def start(name: str, variables: dict) -> object:
        from appliance.personas.text import TextPersona

        return TextPersona(name, variables, config.flows_dir)

    return start


def cmd_flows_simulate(args: argparse.Namespace) -> int:
    import datetime as dt

    from appliance.core.clock import utcnow
    from appliance.flow.simulate import Simulation

    config = _config(args.config)
    flows = _flows(config)
    loaded = flows.get(args.name)
    if loaded is None:
        print(f"appliance: no flow named {args.name!r} (have: {', '.join(sorted(flows))})", file=sys.stderr)
        return 2
    variables = dict(v.split("=", 1) for v in args.var)
    now = dt.datetime.fromisoformat(args.now) if args.now else utcnow()
    sim = Simulation(loaded, variables=variables, now=now, on_heard=lambda text: print(f"  🔊 {text}"),
                     personas=_text_personas(config))
    script = Path(args.script).read_text().splitlines() if args.script else None

    def status() -> None:
        shown = {k: v for k, v in sim.engine.variables.items() if v not in ("", None)}
        print(f"  [t={sim.elapsed:.1f}s step={sim.step}] {json.dumps(shown, default=str)}")

    async def run() -> None:
        print(f"calling flow {loaded.flow.name} (version {loaded.version}); "
              "type speech, #1 for keys, 'silence [N]', 'hangup'")
        await sim.start()
        status()
        lines = iter(script) if script is not None else None
        while not sim.finished:
            if lines is not None:
                line = next(lines, None)
                if line is None:
                    await sim.hangup()
                    break
                print(f"> {line}")
            else:
                try:
                    line = await asyncio.get_running_loop().run_in_executor(None, input, "> ")
                except EOFError:
                    await sim.hangup()
                    break
            await sim.line(line)
            status()
        print(f"outcome: {sim.outcome}")

    asyncio.run(run())
    return 0


def cmd_flows_test(args: argparse.Namespace) -> int:
    from appliance.flow.testing import run_file

    config = _config(args.config)
    flows = _flows(config)
    paths = [Path(p) for p in args.paths] or [config.flows_dir / "tests"]
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        print("appliance: no flow tests found", file=sys.stderr)
        return 1

    async def run() -> list:
        return [r for f in files for r in await run_file(f, flows, _text_personas(config))]

    results = asyncio.run(run())
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'} {result.file}: {result.case}")
        for failure in result.failures:
            print(f"    {failure}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _accounts(config: Config):
    from appliance.operators.accounts import Accounts
    from appliance.storage import Storage

    setup("ERROR")  # the command prints its own result
    return Accounts(Storage(config.database))


def _password(args: argparse.Namespace) -> str:
    """From the environment variable --password-env names, else asked twice at the terminal."""
    import getpass

    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise AccountError(f"environment variable {args.password_env} is not set")
        return password
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise AccountError("the passwords do not match")
    return password


def _unknown_queues(config: Config, queues: list[str]) -> list[str]:
    from appliance.flow.loader import load_queues

    path = config.flows_dir / "queues.yaml"
    try:
        known = load_queues(path).queues
    except FlowError as exc:
        print(f"appliance: warning: cannot check queue names against {path}:\n{exc}", file=sys.stderr)
        return []
    return [q for q in queues if q not in known]


def cmd_users_add(args: argparse.Namespace) -> int:
    config = _config(args.config)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    accounts = _accounts(config)
    # Checked before asking for a password, so a typo costs no typing.
    if accounts.get(args.name) is not None:
        raise AccountError(f"user {args.name!r} already exists")
    unknown = _unknown_queues(config, queues)
    if unknown:
        # Added anyway: the queue may be on its way into queues.yaml.
        print(f"appliance: warning: no queue {', '.join(unknown)} in {config.flows_dir / 'queues.yaml'}",
              file=sys.stderr)
    account = accounts.add(args.name, args.role, queues, _password(args))
    print(f"added {account.username} ({account.role}; queues: {', '.join(account.queues) or '-'})")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    config = _config(args.config)
    users = _accounts(config).list()
    if not users:
        print("no users yet; add one with: appliance users add NAME --role admin", file=sys.stderr)
        return 0
    print(f"{'username':<32} {'role':<10} {'disabled':<8} queues")
    for user in users:
        print(f"{user.username:<32} {user.role:<10} {'yes' if user.disabled else 'no':<8} "
              f"{','.join(user.queues) or '-'}")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    _accounts(_config(args.config)).disable(args.name)
    print(f"disabled {args.name}")
    return 0


def cmd_users_enable(args: argparse.Namespace) -> int:
    _accounts(_config(args.config)).enable(args.name)
    print(f"enabled {args.name}")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    accounts = _accounts(_config(args.config))
    if accounts.get(args.name) is None:
        raise AccountError(f"no user {args.name!r}")
    accounts.passwd(args.name, _password(args))
    print(f"password changed for {args.name}")
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    from appliance.console.tls import ensure_certificate, fingerprint

    config = _config(args.config)
    cert, _key = ensure_certificate(config.console, config.data_dir)
    print(f"certificate: {cert}")
    print(f"fingerprint: {fingerprint(cert)}")
    return 0


def _users_parser(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="console accounts (operators, supervisors, admins)")
    commands = users.add_subparsers(dest="users_command", required=True)
    add = commands.add_parser("add", help="add an account; the password is asked twice unless --password-env")
    add.add_argument("name")
    # Not argparse choices: a bad role is a user error like the others (exit 1, one line).
    add.add_argument("--role", required=True, help="operator, supervisor or admin")
    add.add_argument("--queues", default="", help="comma-separated queues the person takes calls from")
    add.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable")
    add.set_defaults(func=cmd_users_add)
    commands.add_parser("list", help="list accounts").set_defaults(func=cmd_users_list)
    for name, func, text in (("disable", cmd_users_disable, "stop an account logging in"),
                             ("enable", cmd_users_enable, "let a disabled account log in again")):
        command = commands.add_parser(name, help=text)
        command.add_argument("name")
        command.set_defaults(func=func)
    passwd = commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable")
    passwd.set_defaults(func=cmd_users_passwd)


# Files the appliance writes (database, recordings, secrets, edge config) are the service's own:
# group-readable at most, never world-readable, whatever umask the shell or unit had.
UMASK = 0o027


def main(argv: list[str] | None = None) -> int:
    os.umask(UMASK)
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
    simulate = flows.add_parser("simulate", help="a text call through a flow")
    simulate.add_argument("name")
    simulate.add_argument("--script", help="file of caller lines; runs without asking")
    simulate.add_argument("--var", action="append", default=[], help="NAME=VALUE call variable (e.g. caller=+15550100)")
    simulate.add_argument("--now", help="ISO time the call happens at (business hours)")
    simulate.set_defaults(func=cmd_flows_simulate)
    test = flows.add_parser("test", help="run flow tests (flows/tests/*.yaml)")
    test.add_argument("paths", nargs="*")
    test.set_defaults(func=cmd_flows_test)
    _users_parser(sub)
    drain = sub.add_parser("drain", help="stop taking new calls (the edge answers 503) and wait for live calls "
                           "to end; exit 0 drained, 1 timed out, 2 appliance unreachable")
    drain.add_argument("--timeout", type=_at_least(0), default=600, metavar="SECONDS",
                       help="give up waiting after this long (default 600; the drain stays on)")
    drain.add_argument("--cancel", action="store_true", help="take new calls again")
    drain.set_defaults(func=cmd_drain)
    recordings = sub.add_parser("recordings", help="recording retention").add_subparsers(
        dest="recordings_command", required=True)
    prune = recordings.add_parser("prune", help="delete recordings and voicemail of calls that ended DAYS ago; "
                                  "the call records stay")
    prune.add_argument("--older-than", type=_at_least(0, above=True), required=True, metavar="DAYS")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    prune.set_defaults(func=cmd_recordings_prune)
    backup = sub.add_parser("backup", help="a consistent copy of the database (safe while calls run) into DEST")
    backup.add_argument("dest", metavar="DEST", help="an existing directory")
    backup.add_argument("--keep", type=_at_least(1, int), metavar="N", help="then delete all but the newest N backups")
    backup.set_defaults(func=cmd_backup)
    sub.add_parser("cert", help="make the console's TLS certificate if needed; print it and its fingerprint"
                   ).set_defaults(func=cmd_cert)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (AccountError, AlreadyRunningError, MaintenanceError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, FlowError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
