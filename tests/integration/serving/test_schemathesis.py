"""Property-based fuzzing of the OpenAPI document the service publishes (``/docs.json``).

``schemathesis run`` (the CLI: its pytest plugin does not load under pytest 9) generates valid and
invalid requests for ``/predict`` and the health endpoints. Checked: no 5xx ever; documented
responses match their schema and content type; data the schema forbids is refused. BentoML does
not let a service document extra status codes (413, 415, 503), so status-code conformance is not
checked. Bounded by ``--max-examples`` and a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

# positive_data_acceptance is left out: BentoML does not mark the request body as required, so
# an empty POST counts as "schema-valid", and it is (rightly) refused.
CHECKS = ("not_a_server_error,response_schema_conformance,content_type_conformance,"
          "negative_data_rejection")
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
