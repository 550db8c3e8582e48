"""The Dagster code location: ``dagster dev -f orchestration/definitions.py`` (``make orchestrate``).

Jobs (:mod:`mlops_orchestration.jobs`) run ``mlops-template`` commands in the project's own
environment; sensors (the incoming folder, the team's ``INCOMING_URL`` prefix, the canary) and
schedules (:mod:`mlops_orchestration.triggers`) start them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mlops_orchestration, whatever the working dir

from dagster import Definitions  # noqa: E402

from mlops_orchestration.jobs import JOBS  # noqa: E402
from mlops_orchestration.triggers import SCHEDULES, SENSORS  # noqa: E402

defs = Definitions(jobs=JOBS, schedules=SCHEDULES, sensors=SENSORS)
