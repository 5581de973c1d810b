"""The Helm chart: it lints strictly with every option on, renders each optional object only
when asked, and the real API server accepts everything it renders (server-side apply, with
the Prometheus Operator's real CRDs); manifests/ is its default render.

Running the operator under the chart's RBAC is tests/e2e/test_chart_rbac.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_operator.kube.podspec import LABEL_DEPLOYMENT
from devenv.crds import prometheus_operator_crds
from devenv.kube import KubeAccess
from devenv.kubeclient import api_client, eventually
from tests.support.apply import Applier, differences
from tests.support.chart import CHART, VALUES_ALL, expected_manifests, helm, render, sets, value_keys

pytestmark = pytest.mark.e2e

ALL = ["-f", str(VALUES_ALL)]
VALUES = yaml.safe_load(VALUES_ALL.read_text())

# Optional objects, off by default: the values switch and the kind it adds. The dashboard
# ConfigMap is on by default: test_dashboard_configmap_is_on_by_default_and_carries_the_dashboard;
# so is the NetworkPolicy: test_network_policy_is_on_by_default.
OPTIONAL = [
    ("serviceMonitor", "ServiceMonitor"),
    ("prometheusRule", "PrometheusRule"),
]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def services(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(runner Service, metrics Service)."""
    found = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deploy = one(docs, "Deployment")["metadata"]["name"]
    assert set(found) == {deploy, f"{deploy}-metrics"}
    return found[deploy], found[f"{deploy}-metrics"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", [[], ALL], ids=["defaults", "every-option"])
def test_lint_strict(values: list[str]) -> None:
    out = helm("lint", "--strict", str(CHART), *values)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_schema_refuses_a_typo() -> None:
    out = helm("template", "t", str(CHART), "--set", "typo=1")
    assert out.returncode != 0
    assert "typo" in out.stderr


def test_values_file_sets_every_key_of_values_yaml() -> None:
    """chart-values-all.yaml really is every option: it sets each key values.yaml has."""

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = (
        value_keys(defaults) - value_keys(VALUES) - {"fullnameOverride"}
    )  # fullnameOverride: per release
    assert not missing, f"chart-values-all.yaml does not set: {sorted(missing)}"


def test_default_render_is_cluster_wide_and_least_privilege() -> None:
    docs = render("t", "ops")
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"} <= set(
        kinds(docs)
    )
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    secrets = [r for r in rules if "secrets" in r.get("resources", [])]
    assert secrets
    assert all(r["verbs"] == ["get"] for r in secrets), "secrets: get only, no list/watch"
    assert not [r for r in rules if "*" in r.get("verbs", []) or "*" in r.get("resources", [])]
    deploy = one(docs, "Deployment")
    env = {
        e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    assert env.get("AGENT_OPERATOR_RUNNER_ADDRESS") == "t-livekit-agent-operator.ops.svc:50051"
    assert "PodDisruptionBudget" not in kinds(docs), "one replica: a PDB would block node drains"


def test_watch_namespaces_render_namespaced_roles() -> None:
    docs = render("t", "ops", *sets("watchNamespaces={a,b}"))
    own = ("-leader", "-runner-tls")  # in the operator's own namespace, in both modes
    roles = [d for d in docs if d["kind"] == "Role" and not d["metadata"]["name"].endswith(own)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and not d["metadata"]["name"].endswith(own)]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    # cluster-wide: only what is cluster-scoped by nature (TokenReviews)
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]


def test_leader_election_rolls_over_with_a_lease_of_its_own() -> None:
    docs = render("t", "ops")
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }, "the new operator starts before the old one stops"
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["AGENT_OPERATOR_LEADER_ELECTION_NAMESPACE"]["value"] == "ops"
    assert env["AGENT_OPERATOR_LEADER_ELECTION_LEASE"]["value"] == "t-livekit-agent-operator"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader")]
    assert role["metadata"] == {
        **role["metadata"],
        "name": "t-livekit-agent-operator-leader",
        "namespace": "ops",
    }
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["t-livekit-agent-operator"],
            "verbs": ["get", "list", "watch", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},  # its own pod's leader label
    ]
    assert env["AGENT_OPERATOR_LEADER_LABEL_POD"]["value"] == "$(POD_NAME)"
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-leader")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]

    off = render("t", "ops", *sets("leaderElection.enabled=false"))
    assert one(off, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}, "never two operators at once"
    assert not [d for d in off if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader")]
    off_env = {e["name"] for e in one(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AGENT_OPERATOR_LEADER_ELECTION_NAMESPACE" not in off_env
    assert "AGENT_OPERATOR_LEADER_LABEL_POD" not in off_env
    runner, _ = services(off)
    assert "agentoperator.dev/leader" not in runner["spec"]["selector"], "no one would set the label"


def test_runner_service_selects_the_leader_and_metrics_every_replica() -> None:
    docs = render("t", "ops", *sets("replicaCount=2"))
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    runner, metrics = services(docs)
    assert [p["name"] for p in runner["spec"]["ports"]] == ["grpc-runner"]
    assert [p["name"] for p in metrics["spec"]["ports"]] == ["http-metrics"]
    # the label is not in the pod template: the operator sets it on its own pod
    assert "agentoperator.dev/leader" not in pod_labels
    assert not selects(runner["spec"]["selector"], pod_labels), "a standby is not selected"
    assert selects(runner["spec"]["selector"], {**pod_labels, "agentoperator.dev/leader": "true"})
    assert not selects(runner["spec"]["selector"], {**pod_labels, "agentoperator.dev/leader": "false"})
    assert selects(metrics["spec"]["selector"], pod_labels), "every replica is scraped"


def test_more_than_one_replica_gets_a_disruption_budget_and_needs_leader_election() -> None:
    docs = render("t", "ops", *sets("replicaCount=2"))
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AGENT_OPERATOR_RENEW_DEADLINE"] == "10", "a cut-off leader stops before a standby leads"
    single = one(render("t", "ops"), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "AGENT_OPERATOR_RENEW_DEADLINE" not in {e["name"] for e in single}, "alone: keep serving"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": deploy["spec"]["selector"]["matchLabels"]},
    }, "a drain evicts one replica at a time"
    assert selects(pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["template"]["metadata"]["labels"])
    for replicas in ("0", "1"):
        alone = render("t", "ops", *sets(f"replicaCount={replicas}"))
        assert "PodDisruptionBudget" not in kinds(alone)
        assert "affinity" not in one(alone, "Deployment")["spec"]["template"]["spec"]
    # standbys are for losing a node: spread over nodes unless the user set an affinity
    (term,) = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": deploy["spec"]["selector"]["matchLabels"]},
    }
    own = one(render("t", "ops", *ALL), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert own == VALUES["affinity"], "a user's affinity replaces the default"

    out = helm("template", "t", str(CHART), *sets("replicaCount=2", "leaderElection.enabled=false"))
    assert out.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in out.stderr


@pytest.mark.parametrize(("switch", "kind"), OPTIONAL)
def test_optional_objects_only_when_enabled(switch: str, kind: str) -> None:
    assert kind not in kinds(render("t", "ops")), f"{kind} is off by default"
    assert kinds(render("t", "ops", *sets(f"{switch}.enabled=true"))).count(kind) == 1
    assert kinds(render("t", "ops", *ALL)).count(kind) == 1
    assert kind not in kinds(render("t", "ops", *ALL, *sets(f"{switch}.enabled=false")))


def test_dashboard_configmap_is_on_by_default_and_carries_the_dashboard() -> None:
    configmaps = [d for d in render("t", "ops") if d["kind"] == "ConfigMap"]
    assert len(configmaps) == 1
    (cm,) = configmaps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "what the Grafana sidecar selects"
    board = json.loads(cm["data"]["livekit-agent-operator.json"])
    assert board["uid"] == "livekit-agent-operator"
    assert all(t["expr"] for p in board["panels"] for t in p["targets"])
    assert "ConfigMap" not in kinds(render("t", "ops", *sets("dashboard.enabled=false")))


def test_every_option_reaches_the_render() -> None:
    docs = render("t", "ops", *ALL)
    pod = one(docs, "Deployment")["spec"]["template"]
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["image"] == f"{VALUES['image']['repository']}@{VALUES['image']['digest']}"
    assert container["imagePullPolicy"] == VALUES["image"]["pullPolicy"]
    assert spec["imagePullSecrets"] == [{"name": n} for n in VALUES["imagePullSecrets"]]
    assert container["resources"] == VALUES["resources"]
    for env in VALUES["extraEnv"]:
        assert env in container["env"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AGENT_OPERATOR_RUNNER_ADDRESS"] == VALUES["runner"]["address"]
    assert env["AGENT_OPERATOR_RUNNER_BIND"] == f"0.0.0.0:{VALUES['runner']['port']}"
    assert env["AGENT_OPERATOR_METRICS_BIND"] == f"0.0.0.0:{VALUES['metrics']['port']}"
    assert env["AGENT_OPERATOR_TOKEN_AUDIENCE"] == VALUES["runner"]["tokenAudience"]
    assert env["AGENT_OPERATOR_REATTACH_GRACE"] == str(VALUES["runner"]["reattachGrace"])
    assert env["AGENT_OPERATOR_LOG_LEVEL"] == VALUES["logLevel"]
    assert env["AGENT_OPERATOR_HANDOVER_TIMEOUT"] == str(VALUES["leaderElection"]["handoverTimeout"])
    assert container["args"] == ["run", *[f"--namespace={n}" for n in VALUES["watchNamespaces"]]]
    assert VALUES["podAnnotations"].items() <= pod["metadata"]["annotations"].items()
    assert VALUES["podLabels"].items() <= pod["metadata"]["labels"].items()
    for key in (
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "terminationGracePeriodSeconds",
    ):
        assert spec[key] == VALUES[key], key
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == spec["serviceAccountName"] == VALUES["serviceAccount"]["name"]
    assert sa["metadata"]["annotations"] == VALUES["serviceAccount"]["annotations"]
    runner, metrics = services(docs)
    assert (
        runner["metadata"]["annotations"]
        == metrics["metadata"]["annotations"]
        == VALUES["service"]["annotations"]
    )
    assert runner["spec"]["type"] == VALUES["service"]["type"]
    assert [p["port"] for p in runner["spec"]["ports"]] == [VALUES["runner"]["port"]]
    assert [p["port"] for p in metrics["spec"]["ports"]] == [VALUES["metrics"]["port"]]
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert one(docs, "Deployment")["metadata"]["name"] == f"t-{VALUES['nameOverride']}"


def test_runner_tls_is_on_by_default_with_a_certificate_the_operator_manages() -> None:
    """Issue 14, defect 10: the runner stream (room tokens) was plaintext by default."""
    docs = render("t", "ops")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"] if "TLS" in e["name"]}
    assert env == {
        "AGENT_OPERATOR_RUNNER_TLS_SECRET": "t-livekit-agent-operator-runner-tls",
        "AGENT_OPERATOR_RUNNER_TLS_SECRET_NAMESPACE": "ops",
    }
    assert not [v for v in spec["volumes"] if "secret" in v], "nothing to mount: it reads the Secret itself"
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-runner-tls")]
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["t-livekit-agent-operator-runner-tls"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-runner-tls")
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]

    off = render("t", "ops", *sets("runner.tls.enabled=false"))
    plain = one(off, "Deployment")["spec"]["template"]["spec"]
    assert not [e for e in plain["containers"][0]["env"] if "TLS" in e["name"]]
    assert not [d for d in off if d["metadata"]["name"].endswith("-runner-tls")]


def test_runner_tls_mounts_the_secret_and_points_the_operator_at_it() -> None:
    assert not [d for d in render("t", "ops", *ALL) if d["metadata"]["name"].endswith("-runner-tls")]
    spec = one(render("t", "ops", *ALL), "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == VALUES["runner"]["tls"]["secretName"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount, "subPath mounts are never updated: renewals would not arrive"
    assert mount["readOnly"] is True
    for variable, key in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
        assert env[f"AGENT_OPERATOR_RUNNER_TLS_{variable}"] == f"{mount['mountPath']}/{key}"
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], "key readable"
    assert "AGENT_OPERATOR_RUNNER_TLS_SECRET" not in env


def test_service_monitor_scrapes_the_operators_metrics_port() -> None:
    docs = render("t", "ops", *ALL)
    monitor = one(docs, "ServiceMonitor")
    runner, service = services(docs)
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "ops"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selects(selector, service["metadata"]["labels"]), "selects the metrics Service"
    assert not selects(selector, runner["metadata"]["labels"]), "not the runner Service (the leader only)"
    # the job label of the series is the Service's name; the AgentOperatorDown alert names it
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    down = next(r for r in rules if r.get("alert") == "AgentOperatorDown")
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == VALUES["serviceMonitor"]["interval"]
    assert endpoint["scrapeTimeout"] == VALUES["serviceMonitor"]["scrapeTimeout"]
    assert VALUES["serviceMonitor"]["labels"].items() <= monitor["metadata"]["labels"].items()
    # a Service of another release in the namespace is not selected
    for other in services(render("u", "ops")):
        assert not selects(selector, other["metadata"]["labels"])


def test_network_policy_is_on_by_default() -> None:
    """Only runner pods may reach the runner port unless the user says otherwise (issue 14,
    defect 8: anything that reached port 50051 could load the operator)."""
    assert kinds(render("t", "ops")).count("NetworkPolicy") == 1
    assert "NetworkPolicy" not in kinds(render("t", "ops", *sets("networkPolicy.enabled=false")))


def test_network_policy_admits_runner_pods_and_the_scraper() -> None:
    docs = render("t", "ops", *ALL)
    policy, deploy = one(docs, "NetworkPolicy"), one(docs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"], "egress (API server, LiveKit) stays open"
    ports = {
        p["name"]: p["containerPort"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(by_port) == set(ports) == {"grpc-runner", "http-metrics"}
    # runner pods of any namespace, by the label the operator puts on every pod it creates
    assert by_port["grpc-runner"]["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": LABEL_DEPLOYMENT, "operator": "Exists"}]},
        }
    ]
    assert by_port["http-metrics"]["from"] == VALUES["networkPolicy"]["metricsFrom"]
    # no metricsFrom peers: the metrics port is open to any source
    alone = one(render("t", "ops"), "NetworkPolicy")
    metrics_rule = next(r for r in alone["spec"]["ingress"] if r["ports"][0]["port"] == "http-metrics")
    assert "from" not in metrics_rule


def test_manifests_are_the_default_render() -> None:
    for path, text in expected_manifests().items():
        assert path.is_file(), f"{path} is missing: run `make manifests`"
        assert path.read_text() == text, f"{path} is out of date: run `make manifests`"


@pytest.fixture(scope="module")
def monitoring_crds(kube: KubeAccess) -> None:
    """The Prometheus Operator's real ServiceMonitor and PrometheusRule CRDs, installed with
    server-side apply. Left installed: other tests of the session may use them too."""

    async def install() -> None:
        async with await api_client(kube.kubeconfig) as api:
            applier = Applier(api)
            ext = client.ApiextensionsV1Api(api)
            for path in prometheus_operator_crds():
                (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
                await applier.apply(crd, "")

                async def established(name: str = crd["metadata"]["name"]) -> bool:
                    got = await ext.read_custom_resource_definition(name)
                    return any(
                        c.type == "Established" and c.status == "True" for c in got.status.conditions or []
                    )

                await eventually(established, 60, f"CRD {crd['metadata']['name']} established")

    asyncio.run(install())


@pytest.mark.parametrize("values", ["defaults", "every-option"])
async def test_the_api_server_accepts_everything_the_chart_renders(
    values: str, k8s: client.ApiClient, ns: str, monitoring_crds: None
) -> None:
    release = f"r{uuid.uuid4().hex[:6]}"  # cluster-scoped names carry the release: no collisions
    args = [] if values == "defaults" else [*ALL, *sets(f"watchNamespaces={{{ns}}}")]
    docs = render(release, ns, *args)
    if values == "every-option":
        assert {"ServiceMonitor", "NetworkPolicy", "Role", "RoleBinding"} <= set(kinds(docs))
    applier = Applier(k8s)
    cluster_scoped = [d for d in docs if await applier.cluster_scoped(d)]
    assert {d["kind"] for d in cluster_scoped} <= {"ClusterRole", "ClusterRoleBinding"}
    try:
        for doc in docs:
            applied = await applier.apply(doc, ns)
            assert applied["metadata"]["name"] == doc["metadata"]["name"]
        for doc in docs:  # read back: stored as rendered, nothing pruned or changed
            got = await applier.read(doc, ns)
            assert got["metadata"].get("namespace", "") == doc["metadata"].get("namespace", "")
            assert not differences(doc, got), (
                f"{doc['kind']} {doc['metadata']['name']}: {differences(doc, got)}"
            )

        # no pods start here (no Deployment controller): a dry-run Pod from the template proves
        # the operator pod passes the namespace's Pod Security Standard `restricted`
        template = one(docs, "Deployment")["spec"]["template"]
        pod_spec = {k: v for k, v in template["spec"].items() if k != "priorityClassName"}  # a cluster's own
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "dry-"}, "spec": pod_spec}
        created = await client.CoreV1Api(k8s).create_namespaced_pod(ns, pod, dry_run="All")
        assert created.spec.containers[0].security_context.read_only_root_filesystem is True
    finally:
        for doc in cluster_scoped:
            await applier.delete(doc, ns)
    for doc in cluster_scoped:

        async def gone(doc: dict[str, Any] = doc) -> bool:
            try:
                await applier.read(doc, ns)
            except ApiException as exc:
                return exc.status == 404
            return False

        await eventually(gone, 30, f"{doc['kind']} {doc['metadata']['name']} deleted")
