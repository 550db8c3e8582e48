"""The Kubernetes manifests, validated offline: no cluster runs here (see deploy/k8s/README.md).

``kubernetes-validate`` checks each document against the bundled JSON schemas of Kubernetes 1.37,
strictly (an unknown or misspelt field is an error); the rest checks what the schema cannot:
probes on the service's real endpoints, limits, a non-root user, selectors that match, and the
hardening: a NetworkPolicy that admits only the front, the ingress controller and Prometheus, a
read-only root filesystem with every written path on an emptyDir, no service-account token,
the API keys and the routing verify key from Secrets, and separate object-store credentials
for the replicas and the retrain job, each limited by its own IAM policy document.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
VERSION = "1.37.0"
SERVICE_PORT = 3000


def all_documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def documents() -> dict[str, dict]:
    """The first document of each kind."""
    found: dict[str, dict] = {}
    for doc in all_documents():
        found.setdefault(doc["kind"], doc)
    return found


def named(kind: str, name: str) -> dict:
    matches = [d for d in all_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def pod_spec(workload: dict) -> dict:
    """The pod template's spec of a Deployment or a CronJob."""
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def workloads() -> list[dict]:
    return [d for d in all_documents() if d["kind"] in ("Deployment", "CronJob")]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def secrets_referenced(spec: dict) -> set[str]:
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in spec.get("initContainers", []) + spec["containers"]:
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    return names


def mounted_volume(spec: dict, container: dict, path: str) -> dict:
    """The volume (its definition) the container has mounted at ``path`` or above it."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if (path == root or path.startswith(root + "/")) and (best is None or len(root) > len(best["mountPath"])):
            best = mount
    assert best is not None, f"{container['name']}: nothing mounted at {path}"
    return volumes[best["name"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_for_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    deployment = documents()["Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_deployment_is_probed_limited_non_root_and_selected() -> None:
    docs = documents()
    kinds = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret",
             "NetworkPolicy", "ServiceAccount", "CronJob"}
    assert kinds <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    labels = pod["metadata"]["labels"]
    for selector in (docs["Deployment"]["spec"]["selector"]["matchLabels"], docs["Service"]["spec"]["selector"],
                     docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}")
def test_every_workload_has_no_token_and_a_read_only_root(workload: dict) -> None:
    spec = pod_spec(workload)
    assert spec["automountServiceAccountToken"] is False
    account = named("ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        for mount in container.get("volumeMounts", []):  # writable mounts are scratch space only
            volume = mounted_volume(spec, container, mount["mountPath"])
            assert "emptyDir" in volume or ("secret" in volume and mount.get("readOnly") is True), mount


def test_every_path_the_service_writes_is_a_writable_empty_dir() -> None:
    deployment = named("Deployment", "model-service")
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    settings = named("ConfigMap", "model-service")["data"]
    written = [settings["INFERENCE_LOG_DIR"], "/tmp", "/home/app/bentoml"]  # log spool, temp files, BENTOML_HOME
    for path in written:
        volume = mounted_volume(spec, container, path)
        assert "emptyDir" in volume and "sizeLimit" in volume["emptyDir"], path
    seed = spec["initContainers"][0]  # the image's bento copied into the writable BentoML home
    target = seed["command"][-1].rstrip("/")
    assert mounted_volume(spec, seed, target)["name"] == mounted_volume(spec, container, "/home/app/bentoml")["name"]


def test_the_service_is_closed_by_default_and_trusts_only_signed_routing() -> None:
    spec = pod_spec(named("Deployment", "model-service"))
    container = spec["containers"][0]
    env = env_of(container)
    for variable, secret_name in (("API_KEYS_FILE", "model-service-api-keys"),
                                  ("ROUTING_VERIFY_KEY_FILE", "model-service-routing-verify-key")):
        path = env[variable]["value"]
        volume = mounted_volume(spec, container, path)
        assert volume["secret"]["secretName"] == secret_name, variable
        assert "optional" not in volume["secret"]  # no Secret: the pod does not start, it is not open
        key = posixpath.basename(path)
        assert key in named("Secret", secret_name)["stringData"], variable
    keys = named("Secret", "model-service-api-keys")["stringData"]["keys"]
    assert not [line for line in keys.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_only_the_front_ingress_and_prometheus_reach_the_replicas() -> None:
    policy = named("NetworkPolicy", "model-service")
    labels = named("Deployment", "model-service")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Ingress" in policy["spec"]["policyTypes"]
    rules = policy["spec"]["ingress"]
    assert rules and all(rule.get("from") for rule in rules)  # a rule without "from" admits everyone
    peers = [peer for rule in rules for peer in rule["from"]]
    names = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in peers}
    assert names == {"model-front", "ingress-nginx", "prometheus"}
    assert all("ipBlock" not in peer and peer["podSelector"].get("matchLabels") for peer in peers)
    assert [p["port"] for rule in rules for p in rule["ports"]] == [SERVICE_PORT]


def test_replicas_and_the_retrain_job_hold_separate_store_credentials() -> None:
    replicas = pod_spec(named("Deployment", "model-service"))
    retrain = pod_spec(named("CronJob", "retrain"))
    stores = []
    for spec in (replicas, retrain):
        env = env_of(spec["containers"][0])
        refs = {env[k]["valueFrom"]["secretKeyRef"]["name"] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        assert len(refs) == 1
        stores.append(refs.pop())
    assert stores == ["model-service-store", "retrain-store"]
    assert not secrets_referenced(replicas) & secrets_referenced(retrain)
    assert "MLFLOW_TRACKING_PASSWORD" not in env_of(replicas["containers"][0])
    assert all(not k.startswith("ROUTING_SIGNING") for k in env_of(replicas["containers"][0]))
    for name in secrets_referenced(replicas) | secrets_referenced(retrain):
        named("Secret", name)  # every referenced Secret has its template


def statements(name: str) -> list[dict]:
    return json.loads((K8S / "iam" / name).read_text(encoding="utf-8"))["Statement"]


def test_the_replica_policy_reads_serving_and_only_adds_log_objects() -> None:
    allowed = {(action, resource) for s in statements("replica-policy.json") if s["Effect"] == "Allow"
               for action in s["Action"] for resource in s["Resource"]}
    assert allowed == {("s3:GetObject", "arn:aws:s3:::team-bucket/serving/*"),
                       ("s3:PutObject", "arn:aws:s3:::team-bucket/inference-log/*")}


def test_the_retrain_policy_deletes_only_fetched_batches_and_no_policy_uses_wildcards() -> None:
    retrain = statements("retrain-policy.json")
    assert "s3:PutObject" in [a for s in retrain for a in s["Action"]]
    deleting = [s for s in retrain if "s3:DeleteObject" in s["Action"]]
    # incoming fetch removes a batch object once it is on disk; nothing else of the bucket can go
    assert [r for s in deleting for r in s["Resource"]] == ["arn:aws:s3:::team-bucket/incoming/*"]
    assert all(a in ("s3:GetObject", "s3:DeleteObject") for s in deleting for a in s["Action"])
    for path in (K8S / "iam").glob("*.json"):
        for statement in json.loads(path.read_text(encoding="utf-8"))["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert statement["Effect"] == "Deny" or not any("*" in a for a in actions), path.name
