"""Set up a team's MLflow server running with its basic-auth app (``mlflow server --app-name basic-auth``).

Run once by an administrator after the server's first start, then again whenever a user is added.
It talks to the server only through MLflow's own auth client (its REST API), as the admin:

1. ``--rotate-admin`` replaces the admin password the server was bootstrapped with
   (``MLFLOW_AUTH_ADMIN_PASSWORD`` at its first start) by a new random one, so the bootstrap
   value, which sat in the server's environment, no longer opens anything.
2. Creates the project's experiment and registered model as the admin if they do not exist, so
   no other user can create (and so own) them first.
3. Creates each ``--writer`` (the pipeline, CI) and ``--reader`` user that does not exist yet,
   with a random password. Writers get EDIT on the experiment (log runs) and MANAGE on the
   registered model (register versions, set and remove the ``champion``/``challenger`` aliases,
   tag versions); readers get READ on both and can move nothing.

The admin's credentials come from ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``,
never from the command line (which other users of the machine can read). New passwords are
printed once, as one JSON document on stdout, for the operator to put into the secret store;
they are never logged. An existing user keeps the password it has.

    MLFLOW_TRACKING_URI=https://mlflow.team.internal MLFLOW_TRACKING_USERNAME=admin \\
    MLFLOW_TRACKING_PASSWORD=... python scripts/mlflow_auth_setup.py --rotate-admin \\
        --writer pipeline --writer ci --reader analyst > credentials.json

Exit codes: 0 done, 2 bad arguments or settings, 3 the server refused the admin's credentials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("mlflow_auth_setup")

REPO = Path(__file__).resolve().parents[1]
WRITER_GRANTS = {"experiment": "EDIT", "registered_model": "MANAGE"}
READER_GRANTS = {"experiment": "READ", "registered_model": "READ"}
PASSWORD_BYTES = 24  # 32 URL-safe characters; MLflow requires at least 12


def new_password() -> str:
    """A random password for a new user (or the rotated admin)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def project_names(params_file: Path) -> tuple[str, str]:
    """The experiment and registered model names the pipeline uses (params.yaml)."""
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    return params["mlflow"]["experiment"], params["deploy"]["model_name"]


def ensure_resources(uri: str, experiment: str, model: str) -> str:
    """Create the experiment and the registered model as the admin if missing; return the experiment id.

    The experiment gets no artifact location, so the server keeps its artifacts in its own
    ``--artifacts-destination`` where every machine can load them.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    try:
        client.get_registered_model(model)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(model)
    return experiment_id


def user_exists(auth: Any, username: str) -> bool:
    """Whether the server already has ``username``."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def grant(auth: Any, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give ``username`` exactly ``permission`` on the resource (replacing an earlier grant)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def set_up(uri: str, admin: str, admin_password: str, rotate_admin: bool, experiment: str, model: str,
           writers: list[str], readers: list[str]) -> dict[str, Any]:
    """Rotate the admin password, create the project's resources and users, grant permissions.

    Returns what the operator must keep: the new passwords (only of what this run created).
    """
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(uri)
    result: dict[str, Any] = {"tracking_uri": uri, "experiment": experiment, "registered_model": model,
                              "passwords": {}}
    if rotate_admin:
        password = new_password()
        auth.update_user_password(admin, password, current_password=admin_password)
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password  # the rest of this run uses the new one
        result["passwords"][admin] = password
        logger.info("rotated the password of admin user %r", admin)
    experiment_id = ensure_resources(uri, experiment, model)
    for role, names, grants in (("writer", writers, WRITER_GRANTS), ("reader", readers, READER_GRANTS)):
        for username in names:
            if user_exists(auth, username):
                logger.info("user %r exists; its password is kept", username)
            else:
                password = new_password()
                auth.create_user(username, password)
                result["passwords"][username] = password
                logger.info("created %s user %r", role, username)
            grant(auth, username, "experiment", experiment_id, grants["experiment"])
            grant(auth, username, "registered_model", model, grants["registered_model"])
            logger.info("%r: %s on experiment %r, %s on registered model %r", username,
                        grants["experiment"], experiment, grants["registered_model"], model)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotate-admin", action="store_true",
                        help="replace the admin's (bootstrap) password by a new random one")
    parser.add_argument("--writer", action="append", default=[], help="a pipeline/CI user (repeatable)")
    parser.add_argument("--reader", action="append", default=[], help="a read-only user (repeatable)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--experiment", help="default: mlflow.experiment in params.yaml")
    parser.add_argument("--model", help="default: deploy.model_name in params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    admin = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    admin_password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not uri.startswith(("http://", "https://")) or not admin or not admin_password:
        logger.error("set MLFLOW_TRACKING_URI (the server's http(s) URL), MLFLOW_TRACKING_USERNAME and "
                     "MLFLOW_TRACKING_PASSWORD (the admin's credentials)")
        return 2
    if set(args.writer) & set(args.reader) or admin in args.writer + args.reader:
        logger.error("a user is either a writer or a reader, and never the admin")
        return 2
    experiment, model = project_names(args.params)
    from mlflow.exceptions import MlflowException

    try:
        result = set_up(uri, admin, admin_password, args.rotate_admin, args.experiment or experiment,
                        args.model or model, args.writer, args.reader)
    except MlflowException as exc:
        if "401" in str(exc) or "not authenticated" in str(exc).lower():
            logger.error("the MLflow server %s refused the credentials of admin user %r", uri, admin)
            return 3
        raise
    print(json.dumps(result, indent=2))  # once, for the operator's secret store
    return 0


if __name__ == "__main__":
    sys.exit(main())
