"""The Dask cluster's manifests (deploy/k8s/dask/), validated offline as tests/unit/test_k8s_manifests.py does.

Strict schema validation against Kubernetes 1.37 (``kubernetes-validate``), then what the schema
cannot see: the workers dial the scheduler's Service by its name and port, and the pipeline's
ConfigMap names the same address; the worker's Dask memory limit and threads are the container's
limits; every pod is non-root with a read-only root, no service-account token, spill on an
emptyDir; probes on the ports the commands open; NetworkPolicies that select the scheduler and
workers and admit only the cluster's own pods, the pipeline's labelled pods and Prometheus; the
retrain CronJob carries that label and reads the address from the ConfigMap.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASK = REPO / "deploy/k8s/dask"
MANIFESTS = sorted(DASK.glob("*.yaml"))
VERSION = "1.37.0"
CLIENT_LABEL = {"mlops-template/dask-client": "true"}
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def all_documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def named(kind: str, name: str, documents: list[dict] | None = None) -> dict:
    matches = [d for d in (documents or all_documents()) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (``6Gi``, ``500m``, ``2``) as a number."""
    text = str(value)
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text)
    assert match, text
    return float(match.group(1)) * UNITS.get(match.group(2), 1)


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def container_of(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert len(numbers) == 1, port
    return numbers[0]


def limit_behind(container: dict, value: str, resource: str) -> float:
    """The number a flag's value stands for: a literal, or ``$(VAR)`` read from this container's ``resource``."""
    reference = re.fullmatch(r"\$\((\w+)\)", value)
    if not reference:
        return quantity(value)
    env = {item["name"]: item for item in container.get("env", [])}
    field = env[reference.group(1)]["valueFrom"]["resourceFieldRef"]
    assert field["resource"] == resource and field.get("containerName") == container["name"]
    divisor = quantity(field.get("divisor", "1"))
    assert divisor == 1, field  # bytes and whole cores, as Dask reads them
    resources = container["resources"]["limits"]
    return quantity(resources[resource.split(".", 1)[1]])


def scheduler_address() -> tuple[str, int]:
    """Host and port in the workers' command line."""
    args = container_of(named("Deployment", "dask-worker"))["args"]
    match = re.fullmatch(r"tcp://([a-z0-9.-]+):(\d+)", args[0])
    assert match, args[0]
    return match.group(1), int(match.group(2))


def rule_peers(policy: dict) -> list[tuple[dict, list[int] | None]]:
    """(peer, ports or None for every port) for each peer of each ingress rule."""
    rules = policy["spec"]["ingress"]
    assert rules and all(rule.get("from") for rule in rules), "a rule without from admits everyone"
    return [(peer, [p["port"] for p in rule["ports"]] if "ports" in rule else None)
            for rule in rules for peer in rule["from"]]


def admitted(policy: dict, port: int) -> list[dict]:
    """The peers a policy admits on ``port``."""
    return [peer for peer, ports in rule_peers(policy) if ports is None or port in ports]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_for_kubernetes(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert documents
    for doc in documents:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_serving_manifests_glob_does_not_see_the_cluster() -> None:
    """tests/unit/test_k8s_manifests.py reads deploy/k8s/*.yaml and takes its first Deployment as the
    service's: the cluster lives in a folder of its own (also kept out of `kubectl apply -f deploy/k8s/`)."""
    assert {p.name for p in MANIFESTS} == {"scheduler.yaml", "workers.yaml"}
    top = [d for p in (REPO / "deploy/k8s").glob("*.yaml") for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
           if d]
    assert not [d for d in top if d["metadata"]["name"].startswith("dask")]


def test_a_misspelt_field_is_caught() -> None:
    worker = copy.deepcopy(named("Deployment", "dask-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, VERSION, strict=True)


def test_workers_and_the_pipeline_dial_the_scheduler_service() -> None:
    host, port = scheduler_address()
    service = named("Service", host)
    comm = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(comm) == 1, f"Service {host} has no port {port}"
    scheduler = named("Deployment", "dask-scheduler")
    container = container_of(scheduler)
    assert port_number(container, comm[0]["targetPort"]) == int(flag(container["args"], "--port"))
    assert service["spec"]["selector"].items() <= scheduler["spec"]["template"]["metadata"]["labels"].items()
    assert scheduler["spec"]["selector"]["matchLabels"].items() <= scheduler["spec"]["template"]["metadata"][
        "labels"].items()
    assert named("ConfigMap", "dask-cluster")["data"]["DASK_SCHEDULER_ADDRESS"] == f"tcp://{host}:{port}"


def test_each_worker_is_one_process_sized_by_its_container_limits() -> None:
    container = container_of(named("Deployment", "dask-worker"))
    args = container["args"]
    assert flag(args, "--nworkers") == "1"
    limits = container["resources"]["limits"]
    assert limit_behind(container, flag(args, "--memory-limit"), "limits.memory") == quantity(limits["memory"])
    assert limit_behind(container, flag(args, "--nthreads"), "limits.cpu") == quantity(limits["cpu"])
    assert quantity(container["resources"]["requests"]["memory"]) <= quantity(limits["memory"]) <= 6 * 2**30


@pytest.mark.parametrize("name", ["dask-scheduler", "dask-worker"])
def test_every_pod_is_non_root_read_only_and_tokenless(name: str) -> None:
    deployment = named("Deployment", name)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    assert named("ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False
    container = container_of(deployment)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:  # scratch space, or the pipeline's shared workspace
        volume = volumes[mount["name"]]
        assert ("emptyDir" in volume and "sizeLimit" in volume["emptyDir"]) or (
            volume.get("persistentVolumeClaim", {}).get("claimName") == "pipeline-workspace"), mount


def test_workers_spill_to_a_sized_empty_dir() -> None:
    deployment = named("Deployment", "dask-worker")
    container = container_of(deployment)
    directory = flag(container["args"], "--local-directory")
    mounts = [m for m in container["volumeMounts"] if directory == m["mountPath"] or directory.startswith(
        m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1
    volume = named_volume(deployment, mounts[0]["name"])
    assert quantity(volume["emptyDir"]["sizeLimit"]) >= quantity(container["resources"]["limits"]["memory"])


def named_volume(deployment: dict, name: str) -> dict:
    return next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


def test_probes_ask_the_ports_the_commands_open() -> None:
    scheduler = container_of(named("Deployment", "dask-scheduler"))
    dashboard = int(flag(scheduler["args"], "--dashboard-address").rsplit(":", 1)[1])
    ready = scheduler["readinessProbe"]["httpGet"]
    assert ready["path"] == "/health" and port_number(scheduler, ready["port"]) == dashboard
    assert port_number(scheduler, scheduler["livenessProbe"]["tcpSocket"]["port"]) == int(
        flag(scheduler["args"], "--port"))
    worker = container_of(named("Deployment", "dask-worker"))
    dashboard = int(flag(worker["args"], "--dashboard-address").rsplit(":", 1)[1])
    for probe in ("readinessProbe", "livenessProbe"):
        get = worker[probe]["httpGet"]
        assert get["path"] == "/health" and port_number(worker, get["port"]) == dashboard, probe


def pod_labels(name: str) -> dict:
    return named("Deployment", name)["spec"]["template"]["metadata"]["labels"]


def test_only_workers_and_the_pipeline_reach_the_scheduler_port() -> None:
    policy = named("NetworkPolicy", "dask-scheduler")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels("dask-scheduler").items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    _, port = scheduler_address()
    peers = admitted(policy, port)
    assert all("ipBlock" not in p and "namespaceSelector" not in p for p in peers)
    selectors = [p["podSelector"]["matchLabels"] for p in peers]
    assert len(selectors) == 2
    assert any(s.items() <= pod_labels("dask-worker").items() for s in selectors)
    assert CLIENT_LABEL in selectors
    for peer, _ports in rule_peers(policy):  # every other rule: Prometheus only
        if peer not in peers:
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_workers_are_reached_only_from_the_cluster_the_pipeline_and_prometheus() -> None:
    policy = named("NetworkPolicy", "dask-worker")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels("dask-worker").items()
    allowed = [pod_labels("dask-worker"), pod_labels("dask-scheduler"), CLIENT_LABEL]
    for peer, _ports in rule_peers(policy):
        assert "ipBlock" not in peer
        labels = peer["podSelector"]["matchLabels"]
        assert any(labels.items() <= pod.items() for pod in allowed) or (
            labels == {"app.kubernetes.io/name": "prometheus"} and "namespaceSelector" in peer), peer
    worker_port = int(flag(container_of(named("Deployment", "dask-worker"))["args"], "--worker-port"))
    assert CLIENT_LABEL in [p["podSelector"]["matchLabels"] for p in admitted(policy, worker_port)]


def test_the_retrain_job_is_a_labelled_client_reading_the_address_from_the_config_map() -> None:
    cronjob = yaml.safe_load((REPO / "deploy/k8s/retrain-cronjob.yaml").read_text(encoding="utf-8"))
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    assert CLIENT_LABEL.items() <= template["metadata"]["labels"].items()
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    ref = env["DASK_SCHEDULER_ADDRESS"]["valueFrom"]["configMapKeyRef"]
    assert ref["key"] in named("ConfigMap", ref["name"])["data"]
    assert ref.get("optional") is True  # without a cluster the job still runs (a LocalCluster)
