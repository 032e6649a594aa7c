"""The soak: thousands of calls of every kind through the edge, then whether every one of them left
exactly the record, recording and log it should, and whether the appliance's memory and open
files stayed flat.

Starts the real appliance (tests.support.appliance) and places `--calls` sipp calls at `--rate`
calls a second: one sipp per kind of call side by side, each at its share of the rate (DTMF
menus, voicemail ended by pound or by hanging up, hang-ups mid-prompt, CANCEL while ringing,
re-INVITE hold and resume, the flow hanging up, bridge transfers to a sipp desk), and a few
baresip calls to the order desk persona. The checks (tests/support/soak/checks.py) and the run
(tests/support/soak/run.py) are the ones tests/calls/test_soak.py runs with 300 calls. Writes
bench/results/soak-*.json and the "Soak" section of docs/BENCHMARKS.md.

    bench/run soak.py --calls 10000 --rate 15    # the soak: 11 minutes of calls, then the checks
    bench/run soak.py --quick                    # 200 calls at 10/s: checks the benchmark
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/soak.py` puts bench/ first, not the repo

from bench.common import DOC, code_version, first_line, machine, missing_program, save_and_print, say
from bench.soak_report import report_of, tables, write_doc
from tests.support.soak.run import SoakPlan, run_soak, workers_for


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run soak.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help="sipp calls in all (default 10000; --quick 200)")
    parser.add_argument("--rate", type=float, help="calls started per second, all kinds together (default 15; "
                                                   "--quick 10)")
    parser.add_argument("--persona-calls", type=int,
                        help="baresip calls to the persona, one at a time through the run (default one every 30 s)")
    parser.add_argument("--workers", type=int, help="SIP workers (default: enough for the rate, see workers_for)")
    parser.add_argument("--sample-every", type=float, default=3.0, help="seconds between RSS/fd samples (default 3)")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="share of the calls before the slopes start (default 0.2)")
    parser.add_argument("--quick", action="store_true", help="200 calls at 10/s, no doc: checks the benchmark")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/BENCHMARKS.md (default in --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, database, recordings)")
    args = parser.parse_args(argv)
    args.argv = argv
    args.calls = args.calls or (200 if args.quick else 10000)
    args.rate = args.rate or (10.0 if args.quick else 15.0)
    if not 0 < args.rate <= 50:
        parser.error("--rate must be above 0 and at most 50 calls a second")
    if args.persona_calls is None:
        args.persona_calls = max(2, round(args.calls / args.rate / 30))
    if args.quick:
        args.no_doc = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if missing_program("bench/soak.py", ("sipp", "kamailio", "baresip")):
        return 2
    plan = SoakPlan(args.calls, args.rate, persona_calls=args.persona_calls,
                    workers=args.workers or workers_for(args.rate), sample_every_s=args.sample_every,
                    warmup=args.warmup)
    started = dt.datetime.now().astimezone()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-soak-"))
    say(f"soak: {plan.calls} calls at {plan.rate:g}/s, {plan.persona_calls} persona calls, "
        f"{plan.workers} SIP workers; in {workdir}")
    try:
        run = run_soak(plan, workdir, say=say)
    except BaseException:
        say(f"kept {workdir} for a post-mortem")
        raise
    report = report_of(run) | {
        "benchmark": "soak",
        "date": started.isoformat(timespec="seconds"),
        "command": "bench/run soak.py " + " ".join(args.argv),
        "machine": machine({"sipp": first_line(["sipp", "-v"]), "kamailio": first_line(["kamailio", "-v"]),
                            "baresip": first_line(["baresip", "-h"]).split(" Copyright")[0]}),
        "code": code_version(("appliance", "sip")),
        "loadavg_before": loadavg_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "workdir": None,
    }
    # A failed run keeps its logs: a worker's crash leaves its stack only in the appliance log.
    if args.keep or report["failures"]:
        report["workdir"] = str(workdir)
        say(f"kept {workdir} (logs, database, recordings)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    tag = "-quick" if args.quick else f"-{plan.calls}"
    save_and_print(report, "soak", tag, tables(report))
    if not args.no_doc:
        write_doc(report)
        print(f"wrote {DOC.relative_to(ROOT)}")
    failures = report["failures"]
    print(f"\n{'PASSED' if not failures else f'FAILED: {len(failures)} problems'}")
    for line in failures[:50]:
        print(f"  {line}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
