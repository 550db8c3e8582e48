"""Screenshot of the Dagster UI's job view, taken with headless Chromium, for the README.

    .venv-orchestration/bin/python orchestration/screenshot.py [--job canary_decide_job] [--out docs/dagster-job.png]

Starts ``dagster dev`` on a free port with a throwaway ``DAGSTER_HOME`` (schedules and sensors
stopped), waits for it, opens the job's page in Debian's ``chromium-headless-shell`` (or
``chromium``; ``apt-get install chromium-headless-shell``) with enough virtual time for the page's
scripts to render the graph, writes the PNG and stops everything. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
logger = logging.getLogger("screenshot")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen) -> None:
    """Poll ``url`` until it answers 200; RuntimeError if ``proc`` dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def graphql(base: str, query: str) -> dict:
    """The ``data`` of one GraphQL request to the webserver."""
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["data"]


def job_path(base: str, job: str) -> str:
    """The UI path of ``job``: ``/locations/<location>/jobs/<job>`` (from the GraphQL API)."""
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
    node = graphql(base, query)["repositoriesOrError"]["nodes"][0]
    location = node["location"]["name"]
    address = location if node["name"] == "__repository__" else f"{node['name']}@{location}"
    return f"/locations/{address}/jobs/{job}"


def main(argv: list[str] | None = None) -> int:
    """Start dagster dev, take the screenshot, stop dagster dev; 1 with a reason when a part is missing."""
    logging.basicConfig(level=logging.INFO, format="screenshot: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="canary_decide_job")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dagster-job.png")
    parser.add_argument("--size", default="1280,720", help="window width,height in pixels")
    args = parser.parse_args(argv)
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    dagster = Path(sys.executable).parent / "dagster"
    if browser is None or not dagster.exists():
        missing = "no Chromium (apt-get install chromium-headless-shell)" if browser is None else \
            f"no {dagster}: run with .venv-orchestration/bin/python (make orchestration-setup)"
        print(f"screenshot: {missing}", file=sys.stderr)
        return 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(HERE / "dagster.yaml", Path(home) / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": home, "ORCHESTRATION_AUTOSTART": "0"}
        proc = subprocess.Popen([str(dagster), "dev", "-f", str(HERE / "definitions.py"), "-h", "127.0.0.1",
                                 "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_for(f"{base}/server_info", 180, proc)
            url = base + job_path(base, args.job)
            graphql(base, "mutation { setNuxSeen }")  # the "join the community" dialog of a new instance
            args.out.parent.mkdir(parents=True, exist_ok=True)
            logger.info("%s -> %s", url, args.out)
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={args.size}", "--virtual-time-budget=20000",
                            f"--screenshot={args.out}", url], check=True, timeout=180,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    logger.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
