"""A soak run: the real appliance behind its edge, one sipp caller per kind of call side by side
(each at its share of the rate), a sipp UAS as the bridge transfers' desk, baresip calling the
order desk persona now and then, and the sampler; then the checks on what it left behind.
"""

from __future__ import annotations

import functools
import math
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from tests.support import baresip
from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.orders_api import OrdersApi
from tests.support.sipp.process import Destination, SippResult, run_sipp
from tests.support.soak import checks
from tests.support.soak.mix import KINDS, PERSONA, Kind, call_id_pattern, scenario, split_calls, write_flows
from tests.support.soak.sampler import Sample, Sampler, Slope, retained, slopes

__all__ = ["CALLS_PER_WORKER", "SoakPlan", "SoakRun", "run_soak", "workers_for"]

CALLS_PER_WORKER = 4  # the pjsua2 wheel's compiled-in limit
PERSONA_SAYS = "I would like to check my order."
PERSONA_SPEAKS_AT_S = 5.0  # after the persona's greeting (about 3.4 s)
CLOSE_TIMEOUT_S = 60.0  # for the last calls to be closed once the callers are done
METRICS = ("rss_kb", "private_kb", "fds")  # what the sampler reads of each process


@dataclass
class SoakPlan:
    calls: int  # sipp calls, shared among the kinds by weight
    rate: float  # sipp calls started per second, all kinds together
    persona_calls: int = 3  # baresip calls to the persona, one at a time, spread over the run
    persona_stay_s: float = 12.0
    workers: int | None = None  # SIP workers; default `workers_for(rate)`
    sample_every_s: float = 3.0
    warmup: float = 0.2  # the share of calls before the slopes start

    @property
    def seconds(self) -> float:
        return self.calls / self.rate


def workers_for(rate: float, kinds: tuple[Kind, ...] = KINDS) -> int:
    """SIP workers for `rate`: the calls up at once (a bridged call is two legs), plus a second of
    set-up and tear-down each, with half again as headroom, 4 a worker; and one for the persona."""
    weights = sum(k.weight for k in kinds)
    legs_s = sum(k.weight * (k.seconds + 1.0) * (2 if k.transferred else 1) for k in kinds) / weights
    return math.ceil(1.5 * rate * legs_s / CALLS_PER_WORKER) + 1


@dataclass(frozen=True)
class PersonaCall:
    established: bool
    problem: str = ""  # what went wrong, when it was not


@dataclass
class SoakRun:
    plan: SoakPlan
    workers: int
    placed: dict[str, int]
    sipp: dict[str, SippResult] = field(default_factory=dict)
    sipp_errors: dict[str, str] = field(default_factory=dict)  # the start of each kind's sipp error file
    persona: list[PersonaCall] = field(default_factory=list)
    desk: SippResult | None = None
    samples: list[Sample] = field(default_factory=list)
    calls_s: float = 0.0  # from the first call to the last caller's end
    steady_until_s: float | None = None  # when the last call was placed, on the sampler's clock
    verdict: checks.Verdict | None = None
    errors: list[str] = field(default_factory=list)  # the log's error lines
    crashed: list[str] = field(default_factory=list)  # a caller thread that died, and why
    workdir: Path | None = None

    @property
    def sipp_failed(self) -> dict[str, int]:
        return {kind: r.failed + (r.returncode != 0 and r.failed == 0) for kind, r in self.sipp.items()
                if r.failed or r.returncode != 0}

    def failures(self) -> list[str]:
        """Everything that makes the soak fail, one line each: empty when it passed."""
        lines = [f"sipp {kind}: {self.sipp[kind].failed} calls failed (exit {self.sipp[kind].returncode}): "
                 f"{_first_error(self.sipp_errors.get(kind) or self.sipp[kind].output)}" for kind in self.sipp_failed]
        lines += [f"sipp {kind} never finished" for kind in self.placed if kind not in self.sipp]
        lines += [f"persona call {n + 1} failed: {call.problem}" for n, call in enumerate(self.persona)
                  if not call.established]
        if len(self.persona) != self.plan.persona_calls:
            lines.append(f"persona: {len(self.persona)} of {self.plan.persona_calls} calls made")
        lines += [f"caller crashed: {line}" for line in self.crashed]
        lines += self.verdict.problems if self.verdict else ["the calls were never checked"]
        lines += [f"error line: {line}" for line in self.errors]
        return lines

    def growth(self, late: bool = False) -> dict[str, list[Slope]]:
        """RSS and open files per process over the steady run, as slopes (KB and fds per 1,000 calls);
        `late`: over its second half only, where a cache or an allocator that fills up has levelled off."""
        share = (1 + self.plan.warmup) / 2 if late else self.plan.warmup
        warmup = int(self.plan.calls * share)
        return {metric: slopes(self.samples, warmup, self.steady_until_s, metric) for metric in METRICS}

    def retained(self) -> dict[str, dict[str, float]]:
        """RSS (KB) and open files each process holds idle after the run beyond before it, per 1,000 calls."""
        return {metric: retained(self.samples, metric) for metric in METRICS}


def _first_error(output: str) -> str:
    """The first event sipp's error file or screen names, in one line."""
    match = re.search(r"(Aborting call[^\n]*|Dead call[^\n]*|[^\n]*(?:timeout|unexpected)[^\n]*)", output)
    return (match.group(1) if match else output[-200:]).strip()[:300]


def _ended(db_path: Path) -> tuple[int, int]:
    """(calls ended, persona calls ended) so far, read beside the running appliance."""
    if not db_path.exists():
        return 0, 0
    db = sqlite_utils.Database(db_path)
    try:
        total, persona = db.execute("SELECT count(*), coalesce(sum(flow = ?), 0) FROM calls WHERE ended_at IS NOT NULL",
                                    [PERSONA["flow"]]).fetchone()
    except sqlite3.OperationalError:  # the appliance creates its tables at start; until then nothing has ended
        return 0, 0
    finally:
        db.close()
    return int(total), int(persona)


def _open_calls(db_path: Path) -> int:
    db = sqlite_utils.Database(db_path)
    try:
        return int(db.execute("SELECT count(*) FROM calls WHERE ended_at IS NULL").fetchone()[0])
    finally:
        db.close()


def run_soak(plan: SoakPlan, workdir: Path, say: Callable[[str], None] = print) -> SoakRun:
    """Run `plan` against a fresh appliance in `workdir` and check what it left (the appliance is
    stopped at the end; its log, database and recordings stay in `workdir`)."""
    placed = split_calls(plan.calls)
    run = SoakRun(plan, plan.workers or workers_for(plan.rate), placed, workdir=workdir)
    desk = Destination.answering(workdir / "desk", max(placed.get("bridge", 0), 1), timeout=plan.seconds + 300)
    # The persona looks orders up at the shop's system (whatever it thinks it heard): a real one.
    with OrdersApi().http.in_thread() as orders:
        app = _appliance(workdir, run.workers, f"sip:desk@{desk.uri_host}", orders.url)
        db_path = app.data_dir / "switchboard.db"
        sampler = Sampler(app, lambda: _ended(db_path), plan.sample_every_s)
        say(f"appliance: {run.workers} SIP workers in {workdir}; {plan.calls} calls at {plan.rate:g}/s "
            f"({', '.join(f'{k} {n}' for k, n in placed.items())}) and {plan.persona_calls} persona calls")
        try:
            app.start(timeout=60 + 3 * run.workers)
            sampler.start()
            started = time.monotonic()
            # After the last call is placed, calls only drain: not growth.
            run.steady_until_s = sampler.elapsed() + plan.seconds
            _place_calls(app, plan, run, workdir, say)
            run.calls_s = round(time.monotonic() - started, 1)
            say(f"callers done after {run.calls_s} s; waiting for the last calls to close")
            deadline = time.monotonic() + CLOSE_TIMEOUT_S
            while _open_calls(db_path) and time.monotonic() < deadline:
                time.sleep(0.5)
            run.samples = sampler.stop()
        finally:
            app.stop()
            run.desk = _desk_result(desk)
    run.verdict = checks.check(checks.read_records(db_path), placed,
                               sum(call.established for call in run.persona))
    run.errors = checks.error_lines(app.log_path)
    return run


def _desk_result(desk: Destination) -> SippResult | None:
    """The desk's own count; None when it still waited for a bridge that never came (then stopped)."""
    try:
        return desk.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def _appliance(workdir: Path, workers: int, desk_uri: str, orders_url: str) -> ApplianceProcess:
    """The appliance under soak: the soak's flows and the persona's, one WebRTC gateway (idle, but
    sampled), bridge transfers allowed to the desk only."""
    flows = write_flows(workdir / "flows", desk_uri, ROOT / "flows")
    persona = flows / "personas" / "orders.yaml"
    persona.write_text(persona.read_text().replace("http://127.0.0.1:8765", orders_url))
    (workdir / "appliance").mkdir(parents=True, exist_ok=True)
    return ApplianceProcess(
        workdir / "appliance", workers=workers, calls_per_worker=CALLS_PER_WORKER,
        numbers={k.number: k.flow for k in KINDS} | {PERSONA["number"]: PERSONA["flow"]}, flows_dir=flows,
        rtc_workers=1,
        environment={"PYTHONFAULTHANDLER": "1"},  # a crashing worker leaves its Python stacks in the log
        # The support flow's webhook (never reached here) names the default port; it must be allowed to load.
        extra={"transfers": {"allowed": [desk_uri]},
               "webhooks": {"allowed": [f"{orders_url}/", "http://127.0.0.1:8765/"]}},
    )


def _persona_call(phone: baresip.Softphone, n: int, uri: str, mic: Path, stay_s: float) -> PersonaCall:
    """The softphone's `n`-th call: the persona greets, the caller asks about an order, and hangs up."""
    try:
        phone.command("dial", uri)
        phone.wait_event("CALL_ESTABLISHED", n, timeout=15)
        phone.say(mic)  # silence, then the question, then silence
        time.sleep(stay_s)
        phone.hangup()
        phone.wait_event("CALL_CLOSED", n, timeout=15)
    except (TimeoutError, RuntimeError, OSError) as exc:
        return PersonaCall(False, f"{exc}"[:300])
    return PersonaCall(True)


def _place_calls(app: ApplianceProcess, plan: SoakPlan, run: SoakRun, workdir: Path,
                 say: Callable[[str], None]) -> None:
    """Every kind's sipp and the persona caller at once; returns when all are done."""
    lock = threading.Lock()

    def kind_caller(kind: Kind) -> None:
        calls = run.placed[kind.name]
        rate = plan.rate * calls / plan.calls
        where = workdir / "sipp" / kind.name
        result = run_sipp(scenario(kind, where), app.sip_port, where, calls=calls, rate=rate, service=kind.number,
                          timeout=plan.seconds + 120, extra=["-cid_str", call_id_pattern(kind)])
        errors = where / "sipp_errors.log"
        with lock:
            run.sipp[kind.name] = result
            run.sipp_errors[kind.name] = errors.read_text(errors="replace")[:5000] if errors.exists() else ""
        say(f"  {kind.name}: {result.successful} of {calls} calls passed, {result.failed} failed")

    def persona_caller() -> None:
        # One softphone for every persona call: a baresip per call would take fresh ports each
        # time, and after a few dozen blocks the test's port picker may hand out the appliance's
        # RTP ports again (it remembers the last 32), which pjsua would then fail to bind.
        mic = baresip.speech_wav(workdir / "persona.wav", PERSONA_SAYS, plan.persona_stay_s + 15,
                                 lead_s=PERSONA_SPEAKS_AT_S)
        gap = plan.seconds / max(plan.persona_calls, 1)
        (workdir / "persona").mkdir(parents=True, exist_ok=True)
        with baresip.Softphone(workdir / "persona", max_seconds=plan.seconds + 120) as phone:
            for n in range(1, plan.persona_calls + 1):
                began = time.monotonic()
                call = _persona_call(phone, n, f"sip:{PERSONA['number']}@127.0.0.1:{app.sip_port}", mic.path,
                                     plan.persona_stay_s)
                with lock:
                    run.persona.append(call)
                time.sleep(max(0.0, gap - (time.monotonic() - began)))
        say(f"  persona: {sum(c.established for c in run.persona)} of {plan.persona_calls} calls established")

    def guarded(name: str, caller: Callable[[], None]) -> Callable[[], None]:
        def run_it() -> None:
            try:
                caller()
            except Exception as exc:  # a caller that dies must fail the soak, not hang or vanish
                with lock:
                    run.crashed.append(f"{name}: {exc!r}")
        return run_it

    threads = [threading.Thread(target=guarded(k.name, functools.partial(kind_caller, k)), name=f"soak-{k.name}")
               for k in KINDS if run.placed.get(k.name)]
    if plan.persona_calls:
        threads.append(threading.Thread(target=guarded("persona", persona_caller), name="soak-persona"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
