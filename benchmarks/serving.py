"""Benchmark: the built service under single-record load, against the framework's ceiling.

Starts real `bentoml serve` processes from the exported bento of the deployed model and, in the
same run, drives each with wrk (many concurrent connections, one record per request). The
constant and batched servers run side by side and are driven in alternating rounds; their
figures are medians over the rounds, and the ratio is the median of per-round ratios, because
this machine's speed drifts by 20% or more between minutes:

- constant:     the same service setup (request guard, validation, traffic config) answering a
                constant, i.e. what BentoML itself can do on this machine;
- batched:      the real model with in-worker micro-batching (the default);
- naive:        one sklearn-pipeline predict call per request, no batching, no numpy replay
                (BATCHING=off SCORER=pipeline): the service as it would be written first;
- unbatched:    the numpy replay without batching (BATCHING=off), to separate the two gains;
- batched+log:  batched with the inference log on, to price the log;
- batched+ship: the same, with the log shipped every second to an S3-protocol store (moto's
                server, started here), to price team mode's log shipping; driven in alternating
                rounds with batched+log, like the constant and batched pair;
- overload:     batched at `--overload-factor` times the concurrency: share shed, the p99 of
                admitted requests from the server's own duration histogram, and what one
                well-behaved probe client (a request every 50 ms) sees meanwhile;
- overload-front: open-loop load (benchmarks/load.py) at 1x, 3x and 10x the capacity, through
                the HAProxy front (deploy/haproxy/haproxy.cfg as shipped, `--front-env` to try
                other settings) and direct to the worker, one `bentoml serve` replica of the
                deployed bento with the production defaults (inference log on). Capacity is the
                median goodput of three closed-loop wrk runs (`--concurrency` connections, in all
                `--capacity-seconds`) direct to that replica at the start of this part (measured
                again after the front phases, to show the drift). Load and attacks come from
                127.0.0.2, a probe client (a request every 50 ms, own connection) from 127.0.0.3;
                during 10x, 64 slow-body clients and one 128 MiB header line run too. Prints the
                generator's own offered rate and CPU, and whether the front's goals were met.
                The front requires API keys as shipped: load and probe send keys of their own (the
                attacks of benchmarks/load.py send none).
- front-keys:   closed-loop wrk through the front with API keys required and through a copy of the
                config without the key check (for comparison only), before one replica, in
                alternating rounds (the order swapped every round): req/s of each, the ratio, and
                HAProxy's CPU per 1,000 requests.
- tasks:        throughput of every task in one run (benchmarks/serving_tasks.py): one
                HistGradientBoosting model each for binary (Adult), multiclass (wine, digits) and
                regression (diabetes), trained and packaged here (no `make pipeline` needed), each
                served by its own `bentoml serve`, driven in alternating rounds; req/s per task and
                its ratio to binary's (goal: >= 0.8).

Servers, fronts and the object store are started by the tests' own helpers (tests/support:
servers, front, team), so the benchmark measures what the tests start and check.

Prints a table and writes benchmarks/results/serving.json. Needs `make pipeline` first (or
`--repo` naming a clone that ran it), wrk and haproxy (Debian packages `wrk`, `haproxy`).
Usage: `python -m benchmarks.serving [--repo PATH] [--duration 10] [--rounds 3] [--concurrency 32]
[--only overload-front | --only front-keys | --only tasks | --skip-overload-front]`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psutil
import requests

from benchmarks import load, serving_tasks
from mlops_template.core import paths
from mlops_template.ops import records
from tests.support.front import Front, haproxy_front, write_key
from tests.support.servers import start_bento_server, stop_server, wait_ready
from tests.support.team import s3, s3_env

REPO = Path(__file__).resolve().parents[1]
RECORD_FIELDS_DROP = ("income",)


def sample_records(count: int = 500, repo: Path = REPO) -> list[dict]:
    """Real test-set records of ``repo``, as a client would send them (no target, nulls omitted)."""
    frame = pd.read_parquet(repo / "data/features/test.parquet").head(count)
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (int(v) if isinstance(v, (np.integer,)) else v) for k, v in row.items()
                        if k not in RECORD_FIELDS_DROP and k != "capital_net" and not pd.isna(v)})
    return records


class Server:
    """A `bentoml serve` of ``target`` on a free port (the tests' starter), its log in ``directory``."""

    _numbers = itertools.count(1)

    def __init__(self, target: str, env: dict[str, str], directory: Path, cwd: Path | None = None) -> None:
        self.log = directory / f"serve-{next(self._numbers)}.log"
        self.proc, self.url = start_bento_server(target, Path(env["BENTOML_HOME"]), self.log, cwd, **env)
        self.port = urlsplit(self.url).port

    def wait_ready(self) -> None:
        """Block until ``/readyz`` answers 200 (fails if the server exits)."""
        wait_ready(self.url, self.proc)

    def stop(self) -> None:
        stop_server(self.proc)


WRK_SCRIPT = """
bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, '
    .. '"socket_errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(records: list[dict], path: Path, headers: dict[str, str] | None = None) -> Path:
    """A wrk Lua script that POSTs single-record bodies, cycling through ``records``, with ``headers``."""
    bodies = ",".join(f"[==[{json.dumps({'records': [r]})}]==]" for r in records)
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    path.write_text(WRK_SCRIPT % bodies + extra)
    return path


def admitted_latency_buckets(url: str) -> dict[float, float]:
    """Cumulative counts of BentoML's server-side duration histogram for answered (200) predicts."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "bentoml_service_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (sample.name.endswith("_bucket") and labels.get("http_response_code") == "200"
                    and labels.get("endpoint") == "/predict"):
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def quantile_from_buckets(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The q-quantile (seconds) of the observations between two histogram scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    target, previous_bound, previous_count = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= target:
            if bound == float("inf"):
                return previous_bound
            share = (target - previous_count) / max(count - previous_count, 1e-12)
            return previous_bound + share * (bound - previous_bound)
        previous_bound, previous_count = bound, count
    return None


class Probe(threading.Thread):
    """One well-behaved client beside the load: a request every ``interval`` s, each timed.

    wrk reports one latency distribution for all answers, shed or not; the probe gives the
    latency a client sees for the requests that were let in.
    """

    def __init__(self, url: str, records: list[dict], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.records, self.interval = url, records, interval
        self.answers: list[tuple[int, float]] = []
        self.halt = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            session.get(f"{self.url}/livez", timeout=30)  # connected before the load starts
            self.connected.set()
            for index in itertools.count():
                if self.halt.wait(self.interval):
                    return
                body = {"records": [self.records[index % len(self.records)]]}
                started = time.perf_counter()
                try:
                    status = session.post(f"{self.url}/predict", json=body, timeout=30).status_code
                except requests.RequestException:
                    status = 0
                self.answers.append((status, time.perf_counter() - started))

    def figures(self) -> dict:
        """Requests sent, share not answered 200, and p50/p99 of the answered ones."""
        admitted = [seconds * 1000 for status, seconds in self.answers if status == 200]
        return {
            "probe_requests": len(self.answers),
            "probe_shed_share": round(1 - len(admitted) / max(len(self.answers), 1), 4),
            "probe_admitted_p50_ms": round(float(np.percentile(admitted, 50)), 1) if admitted else None,
            "probe_admitted_p99_ms": round(float(np.percentile(admitted, 99)), 1) if admitted else None,
        }


def drive(url: str, script: Path, concurrency: int, duration: float,
          probe_records: list[dict] | None = None, metrics_url: str | None = None) -> dict:
    """wrk with ``concurrency`` connections for ``duration`` s; plus server-side admitted p99.

    With ``probe_records``, a :class:`Probe` runs beside wrk and its figures are added. The
    server-side figures come from ``metrics_url`` (default ``url``; a front does not serve /metrics).
    """
    before = admitted_latency_buckets(metrics_url or url)
    threads = 2 if concurrency >= 64 else 1
    probe = Probe(url, probe_records) if probe_records else None
    if probe is not None:
        probe.start()
        probe.connected.wait(30)
    try:
        proc = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
             "--timeout", "30s", "-s", str(script), f"{url}/predict"],
            capture_output=True, text=True, check=True)
    finally:
        if probe is not None:
            probe.halt.set()
            probe.join()
    after = admitted_latency_buckets(metrics_url or url)
    line = next(text for text in proc.stdout.splitlines() if text.startswith("WRK "))
    raw = json.loads(line[4:])
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non_2xx"] - raw["socket_errors"]
    admitted_p99 = quantile_from_buckets(before, after, 0.99)
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "ok_rps": round(ok / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1),
        "admitted_p99_ms_server": round(admitted_p99 * 1000, 1) if admitted_p99 is not None else None,
        "shed_share": round(raw["non_2xx"] / max(raw["requests"], 1), 4),
        "socket_errors": raw["socket_errors"],
        **(probe.figures() if probe is not None else {}),
    }


def report(name: str, result: dict) -> None:
    """One line per measurement, as it happens."""
    print(f"{name:<12} c={result['concurrency']:<4} {result['ok_rps']:>7} req/s  "
          f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms (server-side admitted p99 "
          f"{result['admitted_p99_ms_server']} ms)  non-2xx {result['shed_share']:.1%}  "
          f"socket errors {result['socket_errors']}", flush=True)
    if "probe_requests" in result:
        print(f"{'':<12} probe client: {result['probe_requests']} requests, "
              f"{result['probe_shed_share']:.1%} shed, admitted p50 "
              f"{result['probe_admitted_p50_ms']} ms, p99 {result['probe_admitted_p99_ms']} ms",
              flush=True)


def measure(name: str, target: str, env: dict[str, str], cwd: Path, script: Path,
            concurrency: int, duration: float, warmup: float,
            probe_records: list[dict] | None = None) -> dict:
    """Start one server, warm it up, measure it, stop it."""
    server = Server(target, env, cwd)
    try:
        server.wait_ready()
        drive(server.url, script, concurrency, warmup)
        result = drive(server.url, script, concurrency, duration, probe_records)
    finally:
        server.stop()
    report(name, result)
    return result


def median_result(runs: list[dict]) -> dict:
    """Per-figure medians of repeated measurements, with the runs kept."""
    figures = ("ok_rps", "p50_ms", "p99_ms", "admitted_p99_ms_server", "shed_share")
    merged = {key: float(np.median([r[key] for r in runs if r[key] is not None]))
              for key in figures}
    return {**runs[0], **merged, "runs": runs}


def alternate(servers: dict[str, Server], script: Path, concurrency: int, duration: float,
              warmup: float, rounds: int) -> dict[str, list[dict]]:
    """Drive live servers in turn, ``rounds`` times: slow drifts of the machine hit all alike."""
    for server in servers.values():
        server.wait_ready()
        drive(server.url, script, concurrency, warmup)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for round_number in range(rounds):
        for name, server in servers.items():
            runs[name].append(drive(server.url, script, concurrency, duration))
            report(f"{name} #{round_number + 1}", runs[name][-1])
    return runs


def champion_deployment(repo: Path) -> dict:
    """The deployment serving now in ``repo``, with an archive on disk to import (SystemExit if none)."""
    champion = records.champion(repo / paths.CHAMPION_RECORD)
    if champion is None or not champion.get("archive") or not (repo / champion["archive"]).is_file():
        raise SystemExit(f"no deployed champion with an archive in {repo}: run `make pipeline` first")
    return champion


# --- overload through the front and direct to the worker (open loop) ---------------------------------

HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
LOAD_SOURCE, PROBE_SOURCE = "127.0.0.2", "127.0.0.3"  # the overload and attacks; the probe client
PRESETENV = re.compile(r"^\s*presetenv\s+(FRONT_\w+)\s+(\"[^\"]*\"|\S+)", re.MULTILINE)
CAPACITY_ROUNDS = 3
GENERATOR_MAX_LAG_MS = 50.0  # the generator's scheduler this far behind at p99: it did not keep up
FRONT_GOALS = {"goodput_vs_capacity": 0.8, "probe_success_share": 0.99, "probe_p99_ms": 250.0}


def front_defaults(config: Path = HAPROXY_CONFIG) -> dict[str, str]:
    """The ``FRONT_*`` defaults of a front config (its ``presetenv`` lines)."""
    return {name: value.strip('"') for name, value in PRESETENV.findall(config.read_text())}


def replica_connections(front: Front) -> dict[str, float]:
    """Connections the front opened to its replica so far, and requests that reused one."""
    return {"opened": front.metric("haproxy_server_connection_attempts_total", server="replica1"),
            "reused": front.metric("haproxy_server_connection_reuses_total", server="replica1")}


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (guest time is inside user on Linux)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def overload_phase(port: int, rate: float, seconds: float, requests_: list[bytes], attack: bool, connections: int,
                   watch: dict[str, list[psutil.Process]], front: Front | None = None,
                   probe_requests: list[bytes] | None = None) -> dict:
    """The load, the probe (``probe_requests``, default ``requests_``) and (``attack``) the attacks against
    ``port`` in their own processes, with the CPU each watched process tree and the whole machine used."""
    start_at = time.monotonic() + 1.5
    parts = {
        "load": (load.open_loop, load.LoadSpec("127.0.0.1", port, LOAD_SOURCE, rate, seconds, start_at, requests_,
                                               max_connections=connections)),
        "probe": (load.probe, load.ProbeSpec("127.0.0.1", port, PROBE_SOURCE, seconds, start_at,
                                             probe_requests or requests_)),
    }
    if attack:
        parts["attacks"] = (load.attacks, load.AttackSpec("127.0.0.1", port, LOAD_SOURCE, seconds, start_at))
    cpu: dict[str, float] = {}

    def sample() -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        ours = process_tree(os.getpid())  # this run: servers, front, generator processes, wrk
        before = {name: cpu_seconds(procs) for name, procs in watch.items()}
        ours_before, softirq_before = cpu_seconds(ours), psutil.cpu_times().softirq
        busy, wall = machine_busy_seconds(), time.monotonic()
        time.sleep(max(0.0, start_at + seconds - time.monotonic()))
        wall = time.monotonic() - wall
        cpu.update({f"{name}_cores": round((cpu_seconds(procs) - before[name]) / wall, 2)
                    for name, procs in watch.items()})
        busy = machine_busy_seconds() - busy
        cpu["machine_busy_cores"] = round(busy / wall, 2)
        cpu["softirq_cores"] = round((psutil.cpu_times().softirq - softirq_before) / wall, 2)
        # busy time of processes outside this run (another user's tests), plus kernel time no process owns
        cpu["others_cores"] = round((busy - (cpu_seconds(ours) - ours_before)) / wall, 2)

    before = replica_connections(front) if front is not None else None
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    figures = load.run_phase(parts, timeout=seconds + 40)
    sampler.join()
    if front is not None:
        after = replica_connections(front)
        figures["front_to_replica"] = {key: after[key] - before[key] for key in after}
    figures["cpu"] = cpu
    figures["worker_rss_mb"] = rss_mb(watch["worker"])
    return figures


def phase_summary(target: str, factor: float, capacity: float, raw: dict) -> dict:
    """The figures of one phase: offered, goodput, shed, admitted p99, the probe's view."""
    gen, probe = raw["load"], raw["probe"]
    if "error" in gen or "error" in probe:
        return {"target": target, "factor": factor, "error": gen.get("error") or probe.get("error"), "raw": raw}
    statuses, failures = gen["statuses"], gen["failures"]
    sent = max(gen["sent"] + failures.get("refused_at_connect", 0), 1)  # offered: sent or refused at connect
    goodput = gen["ok_in_window"] / gen["duration_s"]
    other = (sum(v for k, v in statuses.items() if k not in ("200", "429", "503")) + failures.get("dropped", 0)
             + failures.get("timeout", 0) + gen["unanswered_at_end"])
    not_sent = failures.get("unsent", 0) + failures.get("connect_error", 0)
    return {
        "target": target,
        "factor": factor,
        "target_rps": gen["target_rps"],
        "offered_rps": gen["offered_rps"],
        "generator_kept_up": (gen["scheduler_lag_p99_ms"] or 0) <= GENERATOR_MAX_LAG_MS and gen["cpu_cores"] < 0.9,
        "generator_cpu_cores": gen["cpu_cores"],
        "scheduler_lag_p99_ms": gen["scheduler_lag_p99_ms"],
        "send_lag_p99_ms": gen["send_lag_p99_ms"],
        "late_share": gen["late_share"],
        "not_sent_share": round(not_sent / max(gen["scheduled"], 1), 4),
        "goodput_rps": round(goodput, 1),
        "goodput_vs_capacity": round(goodput / capacity, 3),
        "shed_share": round((statuses.get("503", 0) + statuses.get("429", 0)) / sent, 4),
        "shed_503_share": round(statuses.get("503", 0) / sent, 4),
        "shed_429_share": round(statuses.get("429", 0) / sent, 4),
        "refused_share": round(failures.get("refused", 0) / sent, 4),
        "other_share": round(other / sent, 4),
        "admitted_p50_ms": gen["ok_p50_ms"],
        "admitted_p99_ms": gen["ok_p99_ms"],
        "probe_success_share": probe["success_share"],
        "probe_p50_ms": probe["ok_p50_ms"],
        "probe_ok_p99_ms": probe["ok_p99_ms"],
        "probe_p99_ms": probe["all_p99_ms"],  # every probe request, a failed one at the time it failed
        "probe_requests": probe["requests"],
        "cpu": raw["cpu"],
        "worker_cpu_ms_per_ok": (round(raw["cpu"]["worker_cores"] * gen["duration_s"] / gen["ok_in_window"] * 1000, 2)
                                 if gen["ok_in_window"] and "worker_cores" in raw["cpu"] else None),
        "front_to_replica_connections": raw.get("front_to_replica"),
        "worker_rss_mb": raw["worker_rss_mb"],
        "attacks": raw.get("attacks"),
        "raw": {"load": gen, "probe": probe},
    }


def _fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _conns(counts: dict | None) -> str:
    return "-" if not counts else f"{counts['opened']:.0f}/{counts['reused']:.0f}"


TABLE_LEGEND = """\
  offered/s  requests sent, or refused when connecting, per second (target/s: scheduled)
  gen CPU    cores the generator process used; lag p99: ms its scheduler ran behind (its own CPU)
  unsent     scheduled but not sent: every connection of the bound busy or connecting, or none could be made
  503+429    shed by the front or the worker; refused: connection closed unanswered (the front's per-client
             connection cap); other: other statuses, drops, timeouts; all three as shares of offered
  p99 200    latency of the admitted (200) load requests, ms
  probe      the probe client's success share and p99 over all its requests (a failure at the time it failed), ms
  CPU        cores used by HAProxy, the worker (serve + worker processes), processes outside this run plus
             softirq (oth), the whole machine (all); ms/200: worker CPU ms per answered request
  new/reused the front's connections to the replica: opened / requests that reused one"""


def print_overload_table(part: dict) -> None:
    """The overload figures as a table, then the attacks, then the goals."""
    print(f"\noverload (open loop, {part['phase_seconds']:.0f} s per phase, at most {part['connections_bound']} "
          f"connections): capacity {part['capacity_rps']} req/s = {part['capacity_method']}")
    if part.get("capacity_after_front_phases_rps"):
        print(f"capacity measured the same way after the front phases (the machine's drift): "
              f"{part['capacity_after_front_phases_rps']} req/s; ratios below use the first")
    print(f"front: {part['front_config']}, settings other than its defaults: {part['front_overrides'] or 'none'}")
    header = (f"{'via':<7}{'load':>5}{'target/s':>9}{'offered/s':>10}{'gen CPU':>8}{'lag p99':>8}{'unsent':>7}"
              f"{'goodput/s':>10}{'/cap':>6}{'503+429':>8}{'refused':>8}{'other':>7}{'p99 200':>8}"
              f"{'probe ok':>9}{'p99':>6}{'CPU hap':>8}{'wrk':>6}{'oth':>6}{'all':>6}{'ms/200':>7}"
              f"{'new/reused':>12}")
    print(header)
    print("-" * len(header))
    for row in part["phases"]:
        if "error" in row:
            print(f"{row['target']:<7}{row['factor']:>4}x  error: {row['error']}")
            continue
        cpu = row["cpu"]
        print(f"{row['target']:<7}{row['factor']:>4}x{row['target_rps']:>9.0f}{row['offered_rps']:>10.0f}"
              f"{row['generator_cpu_cores']:>8.2f}{_fmt(row['scheduler_lag_p99_ms'], '.0f'):>8}"
              f"{row['not_sent_share']:>7.1%}{row['goodput_rps']:>10.0f}{row['goodput_vs_capacity']:>6.2f}"
              f"{row['shed_share']:>8.1%}{row['refused_share']:>8.1%}{row['other_share']:>7.1%}"
              f"{_fmt(row['admitted_p99_ms'], '.0f'):>8}{row['probe_success_share']:>9.1%}"
              f"{_fmt(row['probe_p99_ms'], '.0f'):>6}{_fmt(cpu.get('haproxy_cores'), '.2f'):>8}"
              f"{_fmt(cpu.get('worker_cores'), '.2f'):>6}{_fmt(cpu.get('others_cores'), '.2f'):>6}"
              f"{_fmt(cpu.get('machine_busy_cores'), '.2f'):>6}{_fmt(row['worker_cpu_ms_per_ok'], '.1f'):>7}"
              f"{_conns(row['front_to_replica_connections']):>12}")
    print(TABLE_LEGEND)
    for row in part["phases"]:
        attacks = row.get("attacks")
        if attacks and "error" not in attacks:
            slow, big = attacks["slow_body"], attacks["big_header"]
            print(f"attacks during {row['target']} {row['factor']}x: {slow['clients']} slow bodies -> "
                  f"{slow['outcomes']} (held p50 {slow['held_p50_s']} s, max {slow['held_max_s']} s); "
                  f"128 MiB header: {big['attempts']} attempt(s) -> {big['outcomes']}, at most "
                  f"{big['bytes_sent_max']:,} bytes sent, held at most {big['held_max_s']} s; "
                  f"worker RSS after {row['worker_rss_mb']} MB")
        elif attacks:
            print(f"attacks during {row['target']} {row['factor']}x: error {attacks['error']}")
    for name, goal in part["goals"].items():
        print(f"goal {name}: {goal['value']} (want {goal['want']}): {'MET' if goal['met'] else 'NOT MET'}")
    for note in part["notes"]:
        print(f"note: {note}")


def overload_front(args: argparse.Namespace, env: dict[str, str], bento: str, script: Path, tmp: str,
                   sample: list[dict]) -> dict:
    """Capacity, then the open-loop phases through the front and direct to the worker."""
    replica_env = {k: v for k, v in env.items() if k not in ("INFERENCE_LOG", "MODEL_TAG")}  # production defaults
    keys_file, keys = front_keys(Path(tmp), ("bench-load", "bench-probe"))
    overrides = dict(args.front_env)
    replica, front_running = Server(bento, replica_env, Path(tmp)), contextlib.ExitStack()
    phases: list[dict] = []
    factors = args.overload_factors
    capacity_after_front = None
    try:
        replica.wait_ready()
        front = front_running.enter_context(haproxy_front(
            [replica.url], Path(tmp), config=args.front_config, FRONT_API_KEYS_FILE=str(keys_file), **overrides))
        drive(replica.url, script, args.concurrency, args.warmup)
        capacity_runs = [drive(replica.url, script, args.concurrency, args.capacity_seconds / CAPACITY_ROUNDS)
                         for _ in range(CAPACITY_ROUNDS)]
        for run in capacity_runs:
            report("capacity", run)
        capacity = float(np.median([run["ok_rps"] for run in capacity_runs]))
        bodies = [json.dumps({"records": [record]}).encode() for record in sample]
        watch = {"haproxy": [psutil.Process(front.process.pid)], "worker": process_tree(replica.proc.pid)}
        for target, port in (("front", front.port), ("direct", replica.port)):
            if target not in args.overload_targets:
                continue
            if target == "direct" and "front" in args.overload_targets:  # the machine's speed drifts: check it
                drift_runs = [drive(replica.url, script, args.concurrency, args.capacity_seconds / CAPACITY_ROUNDS)
                              for _ in range(CAPACITY_ROUNDS)]
                capacity_after_front = float(np.median([run["ok_rps"] for run in drift_runs]))
                print(f"capacity again after the front phases: {capacity_after_front} req/s", flush=True)
            requests_ = load.request_bytes("127.0.0.1", port, bodies)
            probe_requests = with_key(requests_, keys["bench-probe"]) if target == "front" else requests_
            requests_ = with_key(requests_, keys["bench-load"]) if target == "front" else requests_
            for factor in factors:
                attack = factor == max(factors) and not args.no_attacks
                raw = overload_phase(port, factor * capacity, args.overload_seconds, requests_, attack,
                                     args.overload_connections, watch, front if target == "front" else None,
                                     probe_requests)
                row = phase_summary(target, factor, capacity, raw)
                phases.append(row)
                if "error" in row:
                    print(f"{target} {factor}x: error {row['error']}", flush=True)
                else:
                    print(f"{target:<6} {factor:>3}x: offered {row['offered_rps']}/{row['target_rps']} req/s "
                          f"(generator {row['generator_cpu_cores']} cores), goodput {row['goodput_rps']} req/s "
                          f"({row['goodput_vs_capacity']:.2f} x capacity), shed {row['shed_share']:.1%}, refused "
                          f"{row['refused_share']:.1%}, admitted p99 {row['admitted_p99_ms']} ms; probe "
                          f"{row['probe_success_share']:.1%} ok, p99 {row['probe_p99_ms']} ms; cpu {row['cpu']}",
                          flush=True)
                time.sleep(args.cooldown)
        try:
            replica_ready_after = requests.get(f"{replica.url}/readyz", timeout=10).status_code == 200
        except requests.RequestException:
            replica_ready_after = False
    finally:
        front_running.close()
        replica.stop()

    top = next((row for row in phases if row["target"] == "front" and row["factor"] == max(factors)
                and "error" not in row), None)
    goals = {}
    if top is not None:
        goals = {
            f"front_goodput_at_{max(factors)}x_vs_capacity": {
                "value": top["goodput_vs_capacity"], "want": f">= {FRONT_GOALS['goodput_vs_capacity']}",
                "met": top["goodput_vs_capacity"] >= FRONT_GOALS["goodput_vs_capacity"]},
            f"front_probe_success_at_{max(factors)}x": {
                "value": top["probe_success_share"], "want": f">= {FRONT_GOALS['probe_success_share']}",
                "met": top["probe_success_share"] >= FRONT_GOALS["probe_success_share"]},
            f"front_probe_p99_ms_at_{max(factors)}x": {
                "value": top["probe_p99_ms"], "want": f"<= {FRONT_GOALS['probe_p99_ms']:.0f}",
                "met": top["probe_p99_ms"] is not None and top["probe_p99_ms"] <= FRONT_GOALS["probe_p99_ms"]},
        }
    notes = []
    for row in phases:
        if "error" in row:
            continue
        where = f"{row['target']} {row['factor']}x"
        lag = (f"its scheduler ran up to {row['scheduler_lag_p99_ms']} ms behind at p99, "
               f"{row['generator_cpu_cores']} cores; machine {row['cpu']['machine_busy_cores']} of "
               f"{os.cpu_count()} cores busy")
        if not row["generator_kept_up"]:
            notes.append(f"{where}: the GENERATOR could not keep up ({lag}): offered {row['offered_rps']} of "
                         f"{row['target_rps']} req/s")
        elif (row["scheduler_lag_p99_ms"] or 0) > load.LATE_S * 1000:
            notes.append(f"{where}: the generator lagged a little ({lag}) but kept up: offered "
                         f"{row['offered_rps']} of {row['target_rps']} req/s")
        if row["not_sent_share"] > 0.01:
            notes.append(f"{where}: {row['not_sent_share']:.1%} of the scheduled requests were not sent because all "
                         f"{args.overload_connections} connections of the bound were busy or connecting (the server "
                         f"held them) or none could be made; offered {row['offered_rps']} of {row['target_rps']} req/s")
    if any(row.get("refused_share", 0) > 0.05 for row in phases):
        notes.append("refused: the front closed connections at once (FRONT_MAX_CONN_PER_CLIENT per source); each "
                     "refusal costs the generator a connect, so refusals also cost it CPU")
    if not replica_ready_after:
        notes.append("the replica was not ready after the phases")
    part = {
        "capacity_rps": capacity,
        "capacity_method": (f"median ok req/s of {CAPACITY_ROUNDS} closed-loop wrk runs of "
                            f"{args.capacity_seconds / CAPACITY_ROUNDS:.0f} s, {args.concurrency} connections, "
                            "direct to the replica, after a warm-up"),
        "capacity_runs": capacity_runs,
        "capacity_after_front_phases_rps": capacity_after_front,
        "phase_seconds": args.overload_seconds,
        "connections_bound": args.overload_connections,
        "sources": {"load_and_attacks": LOAD_SOURCE, "probe": PROBE_SOURCE},
        "replica": "one `bentoml serve` of the deployed bento, production defaults (inference log on)",
        "front_config": str(args.front_config),
        "front_settings": {**front_defaults(args.front_config), **overrides},
        "front_overrides": overrides,
        "replica_ready_after": replica_ready_after,
        "phases": phases,
        "goals": goals,
        "notes": notes,
    }
    return part


# --- the cost of the front's API key check (closed loop, alternating) ----------------------------------

KEY_CHECK = re.compile(r"^[^\n]*\(BEGIN key check\).*?\(END key check\)[^\n]*\n", re.MULTILINE | re.DOTALL)


def front_keys(directory: Path, names: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A front key file (``<sha256 hex> <name>`` lines) with a new key per name: the file and the keys."""
    path = directory / "api-keys"
    return path, {name: write_key(path, name, f"bench_{secrets.token_urlsafe(32)}") for name in names}


def with_key(requests_: list[bytes], key: str) -> list[bytes]:
    """Raw requests with ``Authorization: Bearer <key>`` added after the request line."""
    return [raw.replace(b"\r\n", f"\r\nAuthorization: Bearer {key}\r\n".encode(), 1) for raw in requests_]


def keyless_config(config: Path, directory: Path) -> Path:
    """A copy of ``config`` without its key check (the lines from ``(BEGIN key check)`` to ``(END key
    check)``), its errors/ linked beside it: the front with keys off, for comparison only."""
    text, found = KEY_CHECK.subn("", config.read_text())
    if found != 1:
        raise SystemExit(f"{config}: expected one block from '(BEGIN key check)' to '(END key check)'")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "haproxy.cfg").write_text(text)
    (directory / "errors").symlink_to(config.resolve().parent / "errors")
    return directory / "haproxy.cfg"


def front_keys_cost(args: argparse.Namespace, env: dict[str, str], bento: str, tmp: str,
                    sample: list[dict]) -> dict:
    """wrk through the front with keys required and with the key check off, before one replica, alternating."""
    root = Path(tmp) / "front-keys"
    (root / "keys").mkdir(parents=True)
    keys_file, keys = front_keys(root, ("bench-wrk",))
    script = wrk_script(sample, root / "keyed.lua", {"Authorization": f"Bearer {keys['bench-wrk']}"})
    replica, fronts_running = Server(bento, env, Path(tmp)), contextlib.ExitStack()
    runs: dict[str, list[dict]] = {"keys": [], "no keys": []}
    try:
        replica.wait_ready()
        keyless = keyless_config(args.front_config, root / "no-keys")
        fronts = {"keys": fronts_running.enter_context(haproxy_front(
                      [replica.url], root / "keys", config=args.front_config, FRONT_API_KEYS_FILE=str(keys_file))),
                  "no keys": fronts_running.enter_context(haproxy_front(
                      [replica.url], root / "no-keys", config=keyless, api_keys=False))}
        for front in fronts.values():
            drive(f"http://127.0.0.1:{front.port}", script, args.concurrency, args.warmup, metrics_url=replica.url)
        for round_number in range(args.rounds):
            for name in (list(fronts) if round_number % 2 == 0 else list(fronts)[::-1]):
                haproxy = [psutil.Process(fronts[name].process.pid)]
                cpu_before = cpu_seconds(haproxy)
                result = drive(f"http://127.0.0.1:{fronts[name].port}", script, args.concurrency, args.duration,
                               metrics_url=replica.url)
                result["haproxy_cpu_ms_per_1000_requests"] = round(
                    (cpu_seconds(haproxy) - cpu_before) * 1e6 / max(result["requests"], 1), 1)
                runs[name].append(result)
                report(f"front {name} #{round_number + 1}", result)
    finally:
        fronts_running.close()
        replica.stop()
    per_round = [k["ok_rps"] / n["ok_rps"] for k, n in zip(runs["keys"], runs["no keys"], strict=True)]
    ratio = round(float(np.median(per_round)), 3)
    cpu = {name: float(np.median([r["haproxy_cpu_ms_per_1000_requests"] for r in measured]))
           for name, measured in runs.items()}
    return {
        "method": (f"wrk, {args.concurrency} connections, {args.duration:g} s per round, {args.rounds} rounds "
                   "alternating (order swapped each round), one `bentoml serve` replica of the deployed bento "
                   "behind two fronts: the shipped config with a key file, and a copy without the key check"),
        "results": {name: median_result(measured) for name, measured in runs.items()},
        "haproxy_cpu_ms_per_1000_requests": cpu,
        "keys_vs_no_keys_throughput": ratio,
        "keys_vs_no_keys_throughput_per_round": [round(r, 3) for r in per_round],
        "goal": {"want": ">= 0.95", "met": ratio >= 0.95},
    }


def print_front_keys(part: dict) -> None:
    """The front with and without keys: req/s, HAProxy CPU per 1,000 requests, the ratio."""
    print("\nfront with API keys vs the key check off (closed loop, alternating rounds)")
    for name, result in part["results"].items():
        print(f"  {name:<8} {result['ok_rps']:>8.1f} req/s (median)  non-2xx {result['shed_share']:.1%}  "
              f"haproxy {part['haproxy_cpu_ms_per_1000_requests'][name]:.1f} CPU ms per 1000 requests")
    print(f"  keys / no keys: {part['keys_vs_no_keys_throughput']} (per round "
          f"{part['keys_vs_no_keys_throughput_per_round']}); goal {part['goal']['want']}: "
          f"{'met' if part['goal']['met'] else 'NOT met'}")


# --- the closed-loop comparisons --------------------------------------------------------------------


def closed_loop(args: argparse.Namespace, env: dict[str, str], bento: str, script: Path, tmp: str,
                sample: list[dict]) -> tuple[dict, dict]:
    """Constant vs batched, the log and its shipping, naive, unbatched, wrk overload: results and ratios."""
    paired = {"constant": Server("benchmarks.constant_service:ConstantService", env, Path(tmp), cwd=REPO),
              "batched": Server(bento, env, Path(tmp))}
    try:
        runs = alternate(paired, script, args.concurrency, args.duration, args.warmup, args.rounds)
    finally:
        for server in paired.values():
            server.stop()
    results = {name: median_result(measured) for name, measured in runs.items()}
    per_round = [b["ok_rps"] / c["ok_rps"] for c, b in zip(runs["constant"], runs["batched"], strict=True)]
    with s3(Path(tmp) / "store", "bench") as store:  # moto's S3-protocol server, as the tests start it
        logged = {"batched+log": Server(bento, {**env, "INFERENCE_LOG": "on", "INFERENCE_LOG_DIR": f"{tmp}/log"},
                                        Path(tmp)),
                  "batched+ship": Server(bento, {**env, **s3_env(store.url), "INFERENCE_LOG": "on",
                                                 "INFERENCE_LOG_DIR": f"{tmp}/ship", "LOG_SHIP_SECONDS": "1",
                                                 "INFERENCE_LOG_URL": "s3://bench/inference-log"}, Path(tmp))}
        try:
            log_runs = alternate(logged, script, args.concurrency, args.duration, args.warmup, args.rounds)
        finally:
            for server in logged.values():
                server.stop()
    results.update({name: median_result(measured) for name, measured in log_runs.items()})
    ship_per_round = [s["ok_rps"] / g["ok_rps"]
                      for g, s in zip(log_runs["batched+log"], log_runs["batched+ship"], strict=True)]
    variants = [
        ("naive", bento, {**env, "BATCHING": "off", "SCORER": "pipeline"}, args.concurrency),
        ("unbatched", bento, {**env, "BATCHING": "off"}, args.concurrency),
        ("overload", bento, env, args.concurrency * args.overload_factor),
    ]
    for name, target, variant_env, concurrency in variants:
        results[name] = measure(name, target, variant_env, Path(tmp), script, concurrency,
                                args.duration, args.warmup, sample if name == "overload" else None)
    ratios = {
        "batched_vs_constant_throughput": round(float(np.median(per_round)), 3),
        "batched_vs_constant_throughput_per_round": [round(r, 3) for r in per_round],
        "batched_vs_naive_throughput": round(results["batched"]["ok_rps"] / results["naive"]["ok_rps"], 2),
        "batched_vs_unbatched_throughput": round(results["batched"]["ok_rps"] / results["unbatched"]["ok_rps"], 2),
        "log_on_vs_off_throughput": round(results["batched+log"]["ok_rps"] / results["batched"]["ok_rps"], 3),
        "log_shipped_vs_local_throughput": round(float(np.median(ship_per_round)), 3),
        "log_shipped_vs_local_throughput_per_round": [round(r, 3) for r in ship_per_round],
    }
    return results, ratios


def print_closed_loop_table(results: dict) -> None:
    header = f"{'wrk, closed':<14}{'conns':>6}{'ok req/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'srv p99':>8}{'non-2xx':>8}"
    print("\n" + header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<14}{r['concurrency']:>6}{r['ok_rps']:>10.1f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
              f"{_fmt(r['admitted_p99_ms_server'], '.1f'):>8}{r['shed_share']:>8.1%}")
        if "probe_requests" in r:
            print(f"{'':<14}probe: {r['probe_requests']} requests, {r['probe_shed_share']:.1%} not 200, "
                  f"p99 {r['probe_admitted_p99_ms']} ms")


def front_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("FRONT_"):
        raise argparse.ArgumentTypeError("expected FRONT_NAME=VALUE")
    return name, value


def factors(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    return [int(v) if v.is_integer() else v for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="repository whose deployed champion (and test records) to serve")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the constant and batched endpoints")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--overload-factor", type=int, default=10)
    parser.add_argument("--only", choices=["overload-front", "front-keys", "tasks"], help="run only this part")
    parser.add_argument("--skip-overload-front", action="store_true", help="leave out the open-loop overload part")
    parser.add_argument("--capacity-seconds", type=float, default=9.0,
                        help=f"wrk time for the capacity, in {CAPACITY_ROUNDS} runs")
    parser.add_argument("--overload-seconds", type=float, default=10.0, help="length of each open-loop phase")
    parser.add_argument("--overload-factors", type=factors, default=[1, 3, 10],
                        help="multiples of the capacity offered; the largest one also runs the attacks")
    parser.add_argument("--overload-connections", type=int, default=1024,
                        help="most connections the open-loop generator has open at once")
    parser.add_argument("--no-attacks", action="store_true")
    parser.add_argument("--overload-targets", type=lambda text: text.split(","), default=["front", "direct"],
                        help="front, direct or both (comma-separated)")
    parser.add_argument("--cooldown", type=float, default=2.0, help="pause after each open-loop phase")
    parser.add_argument("--front-env", type=front_setting, action="append", default=[],
                        metavar="FRONT_NAME=VALUE", help="a front setting other than the shipped default")
    parser.add_argument("--front-config", type=Path, default=HAPROXY_CONFIG,
                        help="an HAProxy config other than the shipped one (its errors/ beside it), to try changes")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/serving.json "
                        "(serving-overload-front.json with --only overload-front)")
    args = parser.parse_args()
    run_closed = args.only is None
    run_front = args.only == "overload-front" or (args.only is None and not args.skip_overload_front)
    run_keys = args.only in ("front-keys", None)
    run_tasks = args.only in ("tasks", None)
    output = args.output or REPO / "benchmarks/results" / (f"serving-{args.only}.json" if args.only else "serving.json")
    if args.only == "tasks":  # trains its own models: no deployed champion needed
        part = serving_tasks.run(args)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
                                      "tasks": part}, indent=2) + "\n")
        serving_tasks.print_task_throughput(part)
        print(f"figures written to {output}")
        return

    repo = args.repo.resolve()
    champion = champion_deployment(repo)
    archive = repo / champion["archive"]
    sample = sample_records(repo=repo)
    summary: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                     "repo": str(repo),
                     "model": {"version": champion["model_version"], "bento": champion["bento_tag"]}}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        env = {**os.environ, "BENTOML_HOME": f"{tmp}/bentoml", "BENTOML_DO_NOT_TRACK": "true",
               "INFERENCE_LOG": "off", "MODEL_TAG": champion["model_tag"]}
        env.pop("ROUTING_FILE", None)
        subprocess.run([sys.executable, "-m", "bentoml", "import", str(archive)], env=env,
                       check=True, capture_output=True)
        bento = champion["bento_tag"]
        script = wrk_script(sample, Path(tmp) / "single_record.lua")
        if run_closed:
            results, ratios = closed_loop(args, env, bento, script, tmp, sample)
            summary.update({
                "duration_seconds": args.duration,
                "rounds": args.rounds,
                "results": results,
                "ratios": ratios,
                "goals": {"batched_vs_constant_throughput": ">= 0.8", "batched_vs_naive_throughput": ">= 5",
                          "batched_p99_ms_at_32": "<= 100"},
            })
        if run_keys:
            summary["front_keys"] = front_keys_cost(args, env, bento, tmp, sample)
        if run_front:
            summary["overload_front"] = overload_front(args, env, bento, script, tmp, sample)
        if run_tasks:
            summary["tasks"] = serving_tasks.task_throughput(args, Path(tmp) / "tasks")
    summary["machine"]["load_average_at_end"] = os.getloadavg()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    if run_closed:
        print_closed_loop_table(summary["results"])
        print(json.dumps(summary["ratios"], indent=2))
    if run_keys:
        print_front_keys(summary["front_keys"])
    if run_front:
        print_overload_table(summary["overload_front"])
    if run_tasks:
        serving_tasks.print_task_throughput(summary["tasks"])
    print(f"figures written to {output}")


if __name__ == "__main__":
    main()
