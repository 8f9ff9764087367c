"""The Kubernetes manifests (deploy/k8s, a kustomize base), with no cluster: the base rendered as
`kubectl apply -k` would (it lists plain resources, no patches), every document valid against
Kubernetes' own schemas (kubernetes-validate bundles them), and what the deployment needs of
them: the image's command, readiness and liveness on /health, a grace period longer than the
drain, a PodDisruptionBudget, an autoscaler on CPU, migrate as a Job, and secrets only from the
Secret, which the base does not hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
# The oldest minor the major clouds still support, and the newest kubernetes-validate knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET = "hfproxy"
# What only the Secret may carry (the five the base reads, and the other credentials hfproxy knows).
SECRET_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "FIELD_ENCRYPTION_KEY",
    "HF_TOKEN",
    "EMAIL_URL",
    "METRICS_TOKEN",
    "HF_OAUTH_CLIENT_SECRET",
    "OIDC_PROVIDERS",
    "ALERT_WEBHOOK_URL",
}
# What `kubectl apply -k` does with this base and render() below reproduces: the resources, as they are.
UNDERSTOOD = {"apiVersion", "kind", "resources"}


def render(base: Path) -> list[dict]:
    """The documents `kustomize build base` gives for a base of plain resources."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    # Anything more (patches, generators, labels, images…) changes what kubectl applies: this
    # renderer would no longer be kustomize's, and the test must say so rather than pass.
    assert set(kustomization) <= UNDERSTOOD, f"render() does not do {set(kustomization) - UNDERSTOOD}"
    return [
        document
        for name in kustomization["resources"]
        for document in yaml.safe_load_all((base / name).read_text())
        if document
    ]


DOCUMENTS = render(BASE)


def one(kind: str) -> dict:
    (found,) = [d for d in DOCUMENTS if d["kind"] == kind]
    return found


def pod_templates() -> list[dict]:
    return [one("Deployment")["spec"]["template"], one("Job")["spec"]["template"]]


def containers() -> list[dict]:
    return [
        container
        for template in pod_templates()
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]
    ]


def web() -> dict:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ENV PATH="))
    return dict(pair.split("=", 1) for pair in line.removeprefix("ENV ").split())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid_against_the_kubernetes_schemas(version):
    example = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    for document in [*DOCUMENTS, example]:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{document['kind']} {document['metadata']['name']}: {error.message} at {error.path}")


def test_the_base_has_each_resource_once_and_no_secret():
    kinds = sorted((d["apiVersion"], d["kind"]) for d in DOCUMENTS)
    assert kinds == [
        ("apps/v1", "Deployment"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("batch/v1", "Job"),
        ("policy/v1", "PodDisruptionBudget"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
    ]
    assert "secret.example.yaml" not in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]


def test_the_pods_run_the_images_commands_as_compose_does():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert web()["command"] == json.loads(cmd.removeprefix("CMD "))  # manage.py serve
    (migrate,) = one("Job")["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == compose["services"]["migrate"]["command"]
    assert one("Job")["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    # One image everywhere, so that an overlay's `images:` changes the init container and the Job too.
    assert {container["image"] for container in containers()} == {web()["image"]}


def test_new_pods_wait_for_the_migrate_job_and_never_migrate_themselves():
    (wait,) = one("Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert "manage.py migrate --check" in " ".join(wait["command"])
    assert not any(
        "migrate" in " ".join(container["command"]) and "--check" not in " ".join(container["command"])
        for container in [wait, web()]
    )


def test_readiness_and_liveness_ask_health_on_the_served_port():
    (port,) = web()["ports"]
    assert str(port["containerPort"]) == dockerfile_env()["PORT"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = web()[probe]["httpGet"]
        assert check["path"] == "/health"
        assert check["port"] in (port["name"], port["containerPort"])
    service_port = one("Service")["spec"]["ports"][0]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])


def test_the_grace_period_is_longer_than_the_drain():
    config = one("ConfigMap")["data"]
    pod = one("Deployment")["spec"]["template"]["spec"]
    pause = web()["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(pause[1]) + float(config["SHUTDOWN_TIMEOUT"]) + float(config["USAGE_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > drain


def test_selectors_pick_the_deployments_pods():
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("Service")["spec"]["selector"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The Job's pods are not the Service's, nor the budget's.
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not one("Service")["spec"]["selector"].items() <= job_labels.items()


def test_a_disruption_budget_and_an_autoscaler_on_cpu():
    budget = one("PodDisruptionBudget")["spec"]
    autoscaler = one("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hfproxy"}
    (metric,) = autoscaler["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # The autoscaler owns the count; a drain can always take one pod and leave one serving.
    assert "replicas" not in one("Deployment")["spec"]
    assert autoscaler["minReplicas"] >= 2
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) < autoscaler["minReplicas"]
    # Utilization is measured against the request: every container asks for CPU and memory.
    for container in containers():
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]


def test_the_pods_run_as_the_images_user_on_a_read_only_root():
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    for template in pod_templates():
        assert str(template["spec"]["securityContext"]["runAsUser"]) == uid
    for container in containers():
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}
    journal = dockerfile_env()["USAGE_JOURNAL_DIR"]
    assert journal in {mount["mountPath"] for mount in web()["volumeMounts"]}


def test_secrets_come_only_from_the_secret():
    example = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    assert example["metadata"]["name"] == SECRET
    offered = set(example["stringData"])
    assert offered == {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "HF_TOKEN"}
    assert not SECRET_VARIABLES & set(one("ConfigMap")["data"])
    read = set()
    for container in containers():
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] == SECRET
                read |= offered
            else:
                assert source["configMapRef"]["name"] == one("ConfigMap")["metadata"]["name"]
        for variable in container.get("env", []):
            if variable["name"] in SECRET_VARIABLES:
                reference = variable["valueFrom"]["secretKeyRef"]  # never `value:`
                assert reference["name"] == SECRET and reference["key"] in offered, variable
                read.add(reference["key"])
    # What the web container reads from the Secret.
    web_reads = {v["name"] for v in web()["env"] if "secretKeyRef" in v.get("valueFrom", {})}
    assert web_reads == offered
    assert read == offered


def test_no_secret_value_is_written_in_the_manifests():
    example = yaml.safe_load((BASE / "secret.example.yaml").read_text())["stringData"]
    assert example["SECRET_KEY"] == example["FIELD_ENCRYPTION_KEY"] == example["HF_TOKEN"] == ""
    for path in BASE.glob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", text), path.name  # a Hugging Face token
        assert not re.search(r"[A-Za-z0-9_-]{43}=", text), path.name  # a Fernet key
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):
            assert password == "PASSWORD", path.name
