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
                well-behaved probe client (a request every 50 ms) sees meanwhile.

Prints a table and writes benchmarks/results/serving.json. Needs `make pipeline` first and wrk
(Debian package `wrk`).
Usage: `python -m benchmarks.serving [--duration 10] [--rounds 3] [--concurrency 32]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from mlops_template.core import paths
from mlops_template.ops import records

REPO = Path(__file__).resolve().parents[1]
RECORD_FIELDS_DROP = ("income",)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_records(count: int = 500) -> list[dict]:
    """Real test-set records, as a client would send them (no target, nulls omitted)."""
    frame = pd.read_parquet(REPO / "data/features/test.parquet").head(count)
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({k: (int(v) if isinstance(v, (np.integer,)) else v) for k, v in row.items()
                        if k not in RECORD_FIELDS_DROP and k != "capital_net" and not pd.isna(v)})
    return records


class Server:
    """A `bentoml serve` subprocess on a free port, stopped on exit."""

    def __init__(self, target: str, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        """Block until ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


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


def wrk_script(records: list[dict], path: Path) -> Path:
    """A wrk Lua script that POSTs single-record bodies, cycling through ``records``."""
    bodies = ",".join(f"[==[{json.dumps({'records': [r]})}]==]" for r in records)
    path.write_text(WRK_SCRIPT % bodies)
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
          probe_records: list[dict] | None = None) -> dict:
    """wrk with ``concurrency`` connections for ``duration`` s; plus server-side admitted p99.

    With ``probe_records``, a :class:`Probe` runs beside wrk and its figures are added.
    """
    before = admitted_latency_buckets(url)
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
    after = admitted_latency_buckets(url)
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


def object_store(bucket: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """moto's S3-protocol server on a free port with ``bucket``; the process and a client's settings."""
    import boto3

    port = free_port()
    settings = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **settings})
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(settings["AWS_ENDPOINT_URL"], timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    boto3.client("s3", endpoint_url=settings["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket=bucket)
    return process, settings


def champion_deployment(repo: Path) -> dict:
    """The deployment serving now in ``repo``, with an archive on disk to import (SystemExit if none)."""
    champion = records.champion(repo / paths.CHAMPION_RECORD)
    if champion is None or not champion.get("archive") or not (repo / champion["archive"]).is_file():
        raise SystemExit(f"no deployed champion with an archive in {repo}: run `make pipeline` first")
    return champion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the constant and batched endpoints")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--overload-factor", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/serving.json")
    args = parser.parse_args()

    champion = champion_deployment(REPO)
    archive = REPO / champion["archive"]
    records = sample_records()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        env = {**os.environ, "BENTOML_HOME": f"{tmp}/bentoml", "BENTOML_DO_NOT_TRACK": "true",
               "INFERENCE_LOG": "off", "MODEL_TAG": champion["model_tag"]}
        env.pop("ROUTING_FILE", None)
        subprocess.run([sys.executable, "-m", "bentoml", "import", str(archive)], env=env,
                       check=True, capture_output=True)
        bento = champion["bento_tag"]
        script = wrk_script(records, Path(tmp) / "single_record.lua")
        paired = {"constant": Server("benchmarks.constant_service:ConstantService", env, REPO),
                  "batched": Server(bento, env, Path(tmp))}
        try:
            runs = alternate(paired, script, args.concurrency, args.duration, args.warmup,
                             args.rounds)
        finally:
            for server in paired.values():
                server.stop()
        results = {name: median_result(measured) for name, measured in runs.items()}
        per_round = [b["ok_rps"] / c["ok_rps"] for c, b in zip(runs["constant"], runs["batched"], strict=True)]
        store, store_env = object_store("bench")
        logged = {"batched+log": Server(bento, {**env, "INFERENCE_LOG": "on", "INFERENCE_LOG_DIR": f"{tmp}/log"},
                                        Path(tmp)),
                  "batched+ship": Server(bento, {**env, **store_env, "INFERENCE_LOG": "on",
                                                 "INFERENCE_LOG_DIR": f"{tmp}/ship", "LOG_SHIP_SECONDS": "1",
                                                 "INFERENCE_LOG_URL": "s3://bench/inference-log"}, Path(tmp))}
        try:
            log_runs = alternate(logged, script, args.concurrency, args.duration, args.warmup, args.rounds)
        finally:
            for server in logged.values():
                server.stop()
            store.terminate()
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
                                    args.duration, args.warmup,
                                    records if name == "overload" else None)

    ratios = {
        "batched_vs_constant_throughput": round(float(np.median(per_round)), 3),
        "batched_vs_constant_throughput_per_round": [round(r, 3) for r in per_round],
        "batched_vs_naive_throughput": round(results["batched"]["ok_rps"] / results["naive"]["ok_rps"], 2),
        "batched_vs_unbatched_throughput": round(results["batched"]["ok_rps"] / results["unbatched"]["ok_rps"], 2),
        "log_on_vs_off_throughput": round(results["batched+log"]["ok_rps"] / results["batched"]["ok_rps"], 3),
        "log_shipped_vs_local_throughput": round(float(np.median(ship_per_round)), 3),
        "log_shipped_vs_local_throughput_per_round": [round(r, 3) for r in ship_per_round],
    }
    summary = {
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "model": {"version": champion["model_version"], "bento": champion["bento_tag"]},
        "duration_seconds": args.duration,
        "rounds": args.rounds,
        "results": results,
        "ratios": ratios,
        "goals": {"batched_vs_constant_throughput": ">= 0.8", "batched_vs_naive_throughput": ">= 5",
                  "batched_p99_ms_at_32": "<= 100"},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
