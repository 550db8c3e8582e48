"""Property-based fuzzing of the OpenAPI document the service publishes (``/docs.json``).

``schemathesis run`` (the CLI: its pytest plugin does not load under pytest 9) generates valid and
invalid requests for ``/predict`` and the health endpoints. Checked: no 5xx ever; documented
responses match their schema, status code and content type; data the schema forbids is refused
and data it allows is accepted (the service completes BentoML's document with the required body,
the closed request object and the guard's 4xx/503 answers). Bounded by ``--max-examples`` and a
timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

CHECKS = ("not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance,"
          "negative_data_rejection,positive_data_acceptance")
MAX_EXAMPLES = 50
TIMEOUT = 90


def test_fuzz_openapi(server: str, tmp_path: Path) -> None:
    """No generated request gets a 5xx, and answers keep the documented shape."""
    assert requests.get(f"{server}/readyz", timeout=5).status_code == 200
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{server}/docs.json",
        "--url", server, "--include-path-regex", r"^/(predict|livez|readyz)$",
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
        "--request-timeout", "30", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, check=False)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
