"""Benchmark: the built service under single-record load, against the framework's ceiling.

Starts real `bentoml serve` processes from the exported bento of the deployed model and, in the
same run, drives each with many concurrent single-record clients:

- constant:     the same service setup (request guard, validation, traffic config) answering a
                constant, i.e. what BentoML itself can do on this machine;
- batched:      the real model with in-worker micro-batching (the default);
- naive:        the real model with one predict call per request (BATCHING=off);
- batched+log:  batched with the inference log on, to price the log;
- overload:     batched at `--overload-factor` times the concurrency: share shed, p99 admitted.

Prints a table and writes benchmarks/results/serving.json. Needs `make pipeline` first.
Usage: `python -m benchmarks.serving [--duration 15] [--concurrency 32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

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

    async def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def drive(url: str, records: list[dict], concurrency: int, duration: float) -> dict:
    """`concurrency` clients each POST one record at a time for `duration` seconds."""
    statuses: list[int] = []
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one_client(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                body = {"records": [records[i % len(records)]]}
                i += concurrency
                started = time.perf_counter()
                try:
                    async with session.post(f"{url}/predict", json=body) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = 0
                latencies.append(time.perf_counter() - started)
                statuses.append(status)

        started = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started

    status_arr = np.array(statuses)
    lat_arr = np.array(latencies)
    ok = status_arr == 200
    shed = np.isin(status_arr, (429, 503))
    admitted = lat_arr[ok]
    return {
        "concurrency": concurrency,
        "requests": int(len(status_arr)),
        "ok_rps": round(float(ok.sum() / elapsed), 1),
        "p50_ms": round(float(np.percentile(admitted, 50) * 1000), 1) if admitted.size else None,
        "p99_ms": round(float(np.percentile(admitted, 99) * 1000), 1) if admitted.size else None,
        "shed_share": round(float(shed.mean()), 4),
        "failed_other": int((~ok & ~shed).sum()),
    }


async def measure(name: str, target: str, env: dict[str, str], cwd: Path, records: list[dict],
                  concurrency: int, duration: float, warmup: float) -> dict:
    """Start one server, warm it up, measure it, stop it."""
    server = Server(target, env, cwd)
    try:
        await server.wait_ready()
        await drive(server.url, records, concurrency, warmup)
        result = await drive(server.url, records, concurrency, duration)
    finally:
        server.stop()
    print(f"{name:<14} c={result['concurrency']:<4} {result['ok_rps']:>8} req/s  "
          f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  shed {result['shed_share']:.1%}  "
          f"other failures {result['failed_other']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--overload-factor", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/serving.json")
    args = parser.parse_args()

    champion = json.loads((REPO / "deployments/champion.json").read_text())["champion"]
    archive = REPO / champion["archive"]
    records = sample_records()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        env = {**os.environ, "BENTOML_HOME": f"{tmp}/bentoml", "BENTOML_DO_NOT_TRACK": "true",
               "INFERENCE_LOG": "off", "MODEL_TAG": champion["model_tag"]}
        env.pop("ROUTING_FILE", None)
        subprocess.run([sys.executable, "-m", "bentoml", "import", str(archive)], env=env,
                       check=True, capture_output=True)
        bento = champion["bento_tag"]
        variants = [
            ("constant", "benchmarks.constant_service:ConstantService", env, REPO, args.concurrency),
            ("batched", bento, env, Path(tmp), args.concurrency),
            ("naive", bento, {**env, "BATCHING": "off"}, Path(tmp), args.concurrency),
            ("batched+log", bento, {**env, "INFERENCE_LOG": "on", "INFERENCE_LOG_DIR": f"{tmp}/log"},
             Path(tmp), args.concurrency),
            ("overload", bento, env, Path(tmp), args.concurrency * args.overload_factor),
        ]
        results = {}
        for name, target, variant_env, cwd, concurrency in variants:
            results[name] = asyncio.run(measure(name, target, variant_env, cwd, records, concurrency,
                                                args.duration, args.warmup))

    ratios = {
        "batched_vs_constant_throughput": round(results["batched"]["ok_rps"] / results["constant"]["ok_rps"], 3),
        "batched_vs_naive_throughput": round(results["batched"]["ok_rps"] / results["naive"]["ok_rps"], 2),
        "log_on_vs_off_p50_latency": round(results["batched+log"]["p50_ms"] / results["batched"]["p50_ms"], 3),
        "log_on_vs_off_throughput": round(results["batched+log"]["ok_rps"] / results["batched"]["ok_rps"], 3),
    }
    report = {
        "machine": {"cpus": os.cpu_count()},
        "model": {"version": champion["model_version"], "bento": champion["bento_tag"]},
        "duration_seconds": args.duration,
        "results": results,
        "ratios": ratios,
        "goals": {"batched_vs_constant_throughput": ">= 0.8", "batched_vs_naive_throughput": ">= 5",
                  "batched_p99_ms_at_32": "<= 100"},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
