# End to end, on the lab: the HA control plane a user gets from `make lab`, checked from outside.
from __future__ import annotations

import base64
import gzip
import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.conftest import REPO
from tests.e2e.conftest import (
    CACHE,
    LAB_SETTINGS,
    LOGS,
    SECRET_STORE_TOKEN,
    VIP,
    VIP_PORT,
    LabRun,
    ansible_playbook,
    https_ok,
    kubectl,
    lab_up,
    node_exec,
)

CONTROL_PLANES = ["cp1", "cp2", "cp3"]
WORKERS = ["worker1", "worker2"]
ADDRESSES = {"cp1": "172.30.0.11", "cp2": "172.30.0.12", "cp3": "172.30.0.13"}


def nodes() -> dict[str, dict]:
    return {item["metadata"]["name"]: item for item in json.loads(kubectl("get", "nodes", "-o", "json"))["items"]}


def test_site_yml_succeeds_on_fresh_nodes(first_run: LabRun) -> None:
    assert first_run.failed and not any(first_run.failed.values()), first_run.failed
    print(f"\nfull site.yml from fresh nodes (lab.py up): {first_run.seconds:.0f} s")


def test_all_nodes_registered_with_roles(first_run: LabRun) -> None:
    registered = nodes()
    assert sorted(registered) == sorted(CONTROL_PLANES + WORKERS)
    for name in CONTROL_PLANES:
        labels = registered[name]["metadata"]["labels"]
        taints = registered[name]["spec"].get("taints", [])
        assert "node-role.kubernetes.io/control-plane" in labels
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in taints
    for name in WORKERS:
        assert "node-role.kubernetes.io/control-plane" not in registered[name]["metadata"]["labels"]
        # Ready workers carry no taint at all (no not-ready, no disk-pressure).
        taints = {t["key"] for t in registered[name]["spec"].get("taints", [])}
        assert not taints, taints
    versions = {n["status"]["nodeInfo"]["kubeletVersion"] for n in registered.values()}
    assert versions == {"v1.37.2"}


def test_every_node_is_ready(first_run: LabRun) -> None:
    """Cilium runs on every node (images built from source, lab/mirror), so every node is Ready."""
    for name, node in nodes().items():
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", (name, ready)


def etcd_health() -> list[dict]:
    return json.loads(
        kubectl(
            "-n",
            "kube-system",
            "exec",
            "etcd-cp1",
            "--",
            "etcdctl",
            "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
            "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
            "endpoint",
            "health",
            "--cluster",
            "-w",
            "json",
        )
    )


def test_etcd_has_three_healthy_members(first_run: LabRun) -> None:
    members = etcd_health()
    assert len(members) == 3, members
    assert all(member["health"] for member in members), members


def test_every_apiserver_and_the_vip_answer(first_run: LabRun) -> None:
    for name, address in ADDRESSES.items():
        assert https_ok(f"https://{address}:6443/readyz"), name
    assert https_ok(f"https://{VIP}:{VIP_PORT}/readyz")


def test_static_pods_running_on_every_control_plane(first_run: LabRun) -> None:
    pods = json.loads(kubectl("-n", "kube-system", "get", "pods", "-o", "json"))["items"]
    for name in CONTROL_PLANES:
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            pod = next(p for p in pods if p["metadata"]["name"] == f"{component}-{name}")
            assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]


def test_user_kubeconfig_reaches_the_api_through_the_vip(first_run: LabRun) -> None:
    path = CACHE / "lab" / "admin.conf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    api = config.new_client_from_config(config_file=str(path))
    assert api.configuration.host == f"https://{VIP}:{VIP_PORT}"
    names = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    assert set(CONTROL_PLANES) <= names


# --- cni and argocd phases: Cilium and ArgoCD as the bootstrap installs them ------------------


VERSIONS = yaml.safe_load((REPO / "roles/cluster_defaults/defaults/main/versions.yml").read_text())
# inventory/lab/group_vars/all/cluster.yml: the working copy beside the lab's other state.
GITOPS_TREE = CACHE / "lab" / "gitops"
ARGOCD_CRDS = ("applications.argoproj.io", "appprojects.argoproj.io", "applicationsets.argoproj.io")


def helm_release(name: str, namespace: str) -> dict:
    """The newest revision of a Helm release, decoded from its Secret (base64 of gzipped JSON)."""
    items = json.loads(kubectl("-n", namespace, "get", "secrets", "-l", f"owner=helm,name={name}", "-o", "json"))
    assert items["items"], f"no Helm release {namespace}/{name}"
    latest = max(items["items"], key=lambda item: int(item["metadata"]["labels"]["version"]))
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(latest["data"]["release"]))))


def test_cilium_release_replaces_kube_proxy_through_the_api_endpoint(first_run: LabRun) -> None:
    release = helm_release("cilium", "kube-system")
    assert release["info"]["status"] == "deployed"
    assert release["chart"]["metadata"]["version"] == VERSIONS["cilium_version"]
    values = release["config"]
    assert values["kubeProxyReplacement"] is True
    assert values["k8sServiceHost"] == LAB_SETTINGS["cluster_api_dns_name"]
    assert values["k8sServicePort"] == VIP_PORT
    assert values["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == [LAB_SETTINGS["cluster_pod_cidr"]]
    assert values["operator"]["replicas"] == 2


def test_cilium_objects_exist_and_kube_proxy_does_not(first_run: LabRun) -> None:
    config = json.loads(kubectl("-n", "kube-system", "get", "configmap", "cilium-config", "-o", "json"))["data"]
    assert config["kube-proxy-replacement"] == "true"
    assert config["ipam"] == "cluster-pool"
    assert config["cluster-pool-ipv4-cidr"] == LAB_SETTINGS["cluster_pod_cidr"]
    agent = json.loads(kubectl("-n", "kube-system", "get", "daemonset", "cilium", "-o", "json"))
    container = next(c for c in agent["spec"]["template"]["spec"]["containers"] if c["name"] == "cilium-agent")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["KUBERNETES_SERVICE_HOST"] == LAB_SETTINGS["cluster_api_dns_name"]
    assert env["KUBERNETES_SERVICE_PORT"] == str(VIP_PORT)
    # An agent runs and is ready on every node, and both operators are available.
    assert agent["status"]["desiredNumberScheduled"] == len(CONTROL_PLANES + WORKERS)
    assert agent["status"]["numberReady"] == len(CONTROL_PLANES + WORKERS), agent["status"]
    operator = json.loads(kubectl("-n", "kube-system", "get", "deployment", "cilium-operator", "-o", "json"))
    assert operator["spec"]["replicas"] == 2
    assert operator["status"].get("availableReplicas") == 2, operator["status"]
    assert not kubectl("-n", "kube-system", "get", "daemonset", "-l", "k8s-app=kube-proxy", "-o", "name").strip()


# --- the datapath: pods, DNS and Services without kube-proxy -----------------------------------

# An image every node already has (the Cilium agent's: Debian with python3), so the checks need no
# image of their own.
PROBE_IMAGE = f"quay.io/cilium/cilium:v{VERSIONS['cilium_version']}"
PROBE_NAMESPACE = "e2e-datapath"
SERVER = """
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8080), H).serve_forever()
"""
CLIENT = """
import socket, sys, time, urllib.request
print("kubernetes.default", socket.gethostbyname("kubernetes.default"))
for attempt in range(30):
    try:
        with urllib.request.urlopen("http://echo:8080/", timeout=3) as r:
            print("echo answered from", r.read().decode()); sys.exit(0)
    except OSError as e:
        print("waiting:", e); time.sleep(2)
sys.exit(1)
"""


def kubectl_apply(manifest: dict) -> None:
    subprocess.run(
        ["docker", "exec", "-i", "cp1", "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "apply", "-f", "-"],
        input=json.dumps(manifest),
        text=True,
        check=True,
        capture_output=True,
    )


def probe_pod(name: str, node: str, script: str, labels: dict[str, str], restart: str) -> dict:
    container = {
        "name": name,
        "image": PROBE_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", script],
        "ports": [{"containerPort": 8080}] if restart == "Always" else [],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": PROBE_NAMESPACE, "labels": labels},
        "spec": {"nodeName": node, "restartPolicy": restart, "containers": [container]},
    }


def test_pods_resolve_names_and_reach_a_service_on_another_node(first_run: LabRun) -> None:
    """CoreDNS answers from a pod, and a ClusterIP Service (Cilium's kube-proxy replacement; there is
    no kube-proxy) reaches a pod on another node."""
    dns = json.loads(kubectl("-n", "kube-system", "get", "deployment", "coredns", "-o", "json"))
    assert dns["status"].get("readyReplicas") == dns["spec"]["replicas"], dns["status"]
    kubectl_apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NAMESPACE}})
    try:
        kubectl_apply(probe_pod("echo", "worker1", SERVER, {"app": "echo"}, "Always"))
        kubectl_apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "echo", "namespace": PROBE_NAMESPACE},
                "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080, "targetPort": 8080}]},
            }
        )
        kubectl("-n", PROBE_NAMESPACE, "wait", "--for=condition=Ready", "pod/echo", "--timeout=180s")
        kubectl_apply(probe_pod("client", "worker2", CLIENT, {"app": "client"}, "Never"))
        deadline = time.monotonic() + 180
        while True:
            phase = kubectl("-n", PROBE_NAMESPACE, "get", "pod", "client", "-o", "jsonpath={.status.phase}")
            if phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
                break
            time.sleep(2)
        logs = kubectl("-n", PROBE_NAMESPACE, "logs", "client")
        print(f"\n{logs}")
        assert phase == "Succeeded", logs
        service_ip = kubectl("get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
        assert f"kubernetes.default {service_ip}" in logs
        assert "echo answered from echo" in logs
    finally:
        kubectl("delete", "namespace", PROBE_NAMESPACE, "--wait=false")


def test_argocd_crds_are_established(first_run: LabRun) -> None:
    for name in ARGOCD_CRDS:
        crd = json.loads(kubectl("get", "crd", name, "-o", "json"))
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
    server = json.loads(kubectl("-n", "argocd", "get", "deployment", "argocd-server", "-o", "json"))
    assert server["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":v{VERSIONS['argocd_version']}")


def manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_appprojects_and_root_application_from_git_are_admitted(first_run: LabRun) -> None:
    """What the working copy holds is what the cluster has: same names, same spec."""
    projects_dir = GITOPS_TREE / "cluster/platform/gitops/argocd/projects"
    wanted = [
        doc for f in sorted(projects_dir.glob("*.yaml")) if f.name != "kustomization.yaml" for doc in manifests(f)
    ]
    assert {p["metadata"]["name"] for p in wanted} >= {"platform"}
    for project in wanted:
        live = json.loads(kubectl("-n", "argocd", "get", "appproject", project["metadata"]["name"], "-o", "json"))
        assert live["spec"] == project["spec"], project["metadata"]["name"]
    (root,) = manifests(GITOPS_TREE / "cluster/bootstrap/root-application/root-app.yaml")
    live = json.loads(kubectl("-n", "argocd", "get", "application", root["metadata"]["name"], "-o", "json"))
    assert live["spec"] == root["spec"]


def argocd_phase_with_external_secrets() -> None:
    """The argocd phase once more with external-secrets switched on, as on a real cluster: the lab
    leaves it off (its chart is not in the mirror), so it is the run that writes the token."""
    components = {**LAB_SETTINGS["homelab_components"], "external_secrets": True}
    ansible_playbook(
        "-i",
        str(REPO / "inventory/lab"),
        str(REPO / "playbooks/argocd.yml"),
        "-e",
        json.dumps({"homelab_components": components}),
        log="argocd-external-secrets",
        env={"HOMELAB_SECRET_STORE_TOKEN": SECRET_STORE_TOKEN},
    )


def test_bootstrap_secrets_reach_the_cluster_only(first_run: LabRun) -> None:
    argocd_phase_with_external_secrets()
    repo = json.loads(kubectl("-n", "argocd", "get", "secret", "gitops-repo", "-o", "json"))
    assert repo["metadata"]["labels"]["argocd.argoproj.io/secret-type"] == "repository"
    assert base64.b64decode(repo["data"]["url"]).decode() == LAB_SETTINGS["gitops_repo_url"]
    # The lab Git server's password (lab/mirror_server.py), referenced as a file by inventory/lab.
    password = (CACHE / "lab" / "git-server" / "password").read_text().strip()
    assert base64.b64decode(repo["data"]["password"]).decode() == password
    store = json.loads(kubectl("-n", "external-secrets", "get", "secret", "secret-store-token", "-o", "json"))
    assert base64.b64decode(store["data"]["token"]).decode() == SECRET_STORE_TOKEN
    for log in LOGS.glob("*.log"):
        text = log.read_text()
        assert SECRET_STORE_TOKEN not in text, f"{log.name}: the secret store token is in the output"
        assert password not in text, f"{log.name}: the Git password is in the output"
    # The working copy including .git (its config must not keep the password either).
    for path in (p for p in GITOPS_TREE.rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert SECRET_STORE_TOKEN.encode() not in content, f"token written into Git: {path}"
        assert password.encode() not in content, f"Git password written into the working copy: {path}"


def test_the_tree_is_pushed_to_the_lab_git_server(first_run: LabRun) -> None:
    """What ArgoCD pulls is what the gitops role committed: the server's main is the working copy's HEAD."""
    served = CACHE / "lab" / "git-server" / "repos" / "cluster.git"

    def git(repo: Path, *args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    assert git(served, "rev-parse", "main") == git(GITOPS_TREE, "rev-parse", "HEAD")
    tree = git(served, "ls-tree", "-r", "--name-only", "main").split()
    assert "cluster/bootstrap/root-application/root-app.yaml" in tree
    assert "cluster/bootstrap/kubeadm-config.yaml" in tree


def test_argocd_admin_password_is_kept_but_never_printed(first_run: LabRun) -> None:
    """argocd-server runs, so the run keeps its initial admin password: mode 0600, not in any log."""
    path = CACHE / "lab" / f"{LAB_SETTINGS['cluster_name']}-argocd-admin-password"
    assert path.exists(), "the argocd phase wrote no admin password file"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 16
    for log in LOGS.glob("*.log"):
        assert password not in log.read_text(), f"{log.name}: the ArgoCD admin password is in the output"


# --- ArgoCD running: syncing the lab's Git server ----------------------------------------------

APPS_DIR = GITOPS_TREE / "cluster/platform/gitops/argocd/apps"
SYNC_TIMEOUT = 900


def tree_applications() -> set[str]:
    """The root Application's children: the Applications the working copy holds."""
    return {
        doc["metadata"]["name"]
        for f in APPS_DIR.glob("*.yaml")
        if f.name != "kustomization.yaml"
        for doc in manifests(f)
    }


def applications() -> dict[str, dict]:
    items = json.loads(kubectl("-n", "argocd", "get", "applications", "-o", "json"))["items"]
    return {item["metadata"]["name"]: item for item in items}


def app_state(app: dict) -> tuple[str, str, list[str]]:
    """Sync status, health status, and the revisions compared (one per source: a chart's
    version and the Git commit of its values for the multi-source Applications)."""
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    return (
        sync.get("status", "Unknown"),
        (status.get("health") or {}).get("status", "Unknown"),
        sync.get("revisions") or [sync.get("revision", "")],
    )


def app_problems(apps: dict[str, dict]) -> list[str]:
    """Why each Application that is not Synced and Healthy is not: ArgoCD's own words."""
    lines = []
    for name, app in sorted(apps.items()):
        sync, health, _ = app_state(app)
        if (sync, health) == ("Synced", "Healthy"):
            continue
        status = app.get("status") or {}
        why = [f"{c.get('type')}: {c.get('message')}" for c in status.get("conditions") or []]
        operation = (status.get("operationState") or {}).get("message")
        lines.append(f"{name}: {sync}/{health} {'; '.join(why)} {operation or ''}".strip())
    return lines


def served_head() -> str:
    served = CACHE / "lab" / "git-server" / "repos" / "cluster.git"
    return subprocess.run(
        ["git", "-C", str(served), "rev-parse", "main"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_argocd_runs_every_component_without_dex(first_run: LabRun) -> None:
    """The run waited for ArgoCD (argocd_wait). Right after the hand-off ArgoCD syncs its own
    installation (the tree's requests and limits roll its pods once): every workload is ready
    again within minutes, and Dex is left out."""
    start = time.monotonic()
    while True:
        workloads = json.loads(kubectl("-n", "argocd", "get", "deployments,statefulsets", "-o", "json"))["items"]
        ready = {
            w["metadata"]["name"]: (
                w["status"].get("readyReplicas", 0),
                w["status"].get("updatedReplicas", 0),
                w["spec"]["replicas"],
            )
            for w in workloads
        }
        if all(have == updated == want for have, updated, want in ready.values()):
            break
        assert time.monotonic() - start < 600, f"ArgoCD not ready within 600 s: {ready}"
        time.sleep(5)
    assert "argocd-dex-server" not in ready, "argocd_dex_enabled is false in the lab"
    assert {"argocd-server", "argocd-repo-server", "argocd-redis", "argocd-application-controller"} <= set(ready)


def test_root_and_every_child_application_are_synced_and_healthy(first_run: LabRun) -> None:
    """ArgoCD syncs the lab's Git server: the root Application and each child in the tree
    (inventory/lab switches on what the mirror can serve) are Synced to the server's main and
    Healthy, ArgoCD's own installation and Cilium's release included."""
    wanted = tree_applications() | {"root"}
    assert {"namespaces", "argocd", "cilium"} <= wanted
    head = served_head()
    start = time.monotonic()
    while True:
        apps = applications()
        done = set(apps) >= wanted and all(
            app_state(apps[name])[:2] == ("Synced", "Healthy") and head in app_state(apps[name])[2] for name in wanted
        )
        if done:
            break
        if time.monotonic() - start > SYNC_TIMEOUT:
            missing = sorted(wanted - set(apps))
            pytest.fail(f"not synced within {SYNC_TIMEOUT} s: missing {missing}; " + " | ".join(app_problems(apps)))
        time.sleep(5)
    print(f"\nArgoCD: {len(wanted)} Applications Synced and Healthy at {head[:12]}, {time.monotonic() - start:.0f} s")
    assert set(apps) == wanted, f"Applications that Git does not hold: {sorted(set(apps) - wanted)}"
    # ArgoCD adopted what the bootstrap installed as it was: it rolled no Cilium agent and no
    # ArgoCD pod (the bootstrap applies the tree's values and patches), so each pod template is
    # still its first revision.
    revisions = kubectl("-n", "kube-system", "get", "controllerrevisions", "-l", "k8s-app=cilium", "-o", "json")
    revisions = json.loads(revisions)
    assert len(revisions["items"]) == 1, "ArgoCD's adoption of Cilium restarted the agents"
    for name in ("argocd-server", "argocd-repo-server", "argocd-redis"):
        live = json.loads(kubectl("-n", "argocd", "get", "deployment", name, "-o", "json"))
        revision = live["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        assert revision == "1", f"ArgoCD's sync of itself rolled {name} (revision {revision})"
    # ArgoCD owns what the bootstrap installed: Cilium's agents and its own server are in the
    # resources of their Applications, in sync.
    for app, kind, name in (("cilium", "DaemonSet", "cilium"), ("argocd", "Deployment", "argocd-server")):
        resources = {(r["kind"], r["name"]): r.get("status") for r in apps[app]["status"]["resources"]}
        assert resources.get((kind, name)) == "Synced", (app, kind, name, resources.get((kind, name)))


def git_as_user(repo: Path, *args: str, askpass: Path) -> str:
    env = {"GIT_ASKPASS": str(askpass), "GIT_TERMINAL_PROMPT": "0", "HOME": str(askpass.parent)}
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout


def wait_for_label(namespace: str, key: str, value: str | None, timeout: float) -> float:
    start = time.monotonic()
    while True:
        labels = json.loads(kubectl("get", "namespace", namespace, "-o", "json"))["metadata"].get("labels", {})
        if labels.get(key) == value:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"{namespace}: label {key}={value} not applied in {timeout} s"
        time.sleep(0.5)


def test_a_commit_pushed_to_the_git_server_is_applied(first_run: LabRun, tmp_path: Path) -> None:
    """A user's commit, pushed over HTTP with the Git server's password, reaches the cluster
    through ArgoCD alone; the revert does too. Seconds from push to applied, both ways."""
    password_file = CACHE / "lab" / "git-server" / "password"
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f'#!/bin/sh\ncase "$1" in Username*) echo git ;; *) cat {password_file} ;; esac\n')
    askpass.chmod(0o700)
    clone = tmp_path / "clone"
    git_as_user(tmp_path, "clone", "--quiet", LAB_SETTINGS["gitops_repo_url"], str(clone), askpass=askpass)
    git_as_user(clone, "config", "user.name", "lab user", askpass=askpass)
    git_as_user(clone, "config", "user.email", "user@lab.homelab.test", askpass=askpass)
    target = clone / "cluster/platform/base/namespaces/argocd.yaml"
    (namespace,) = manifests(target)
    probe = f"p{int(time.time())}"
    namespace["metadata"].setdefault("labels", {})["homelab.test/push-probe"] = probe
    target.write_text(yaml.safe_dump(namespace, sort_keys=False))
    git_as_user(clone, "commit", "--quiet", "-am", "lab test: label the argocd namespace", askpass=askpass)
    git_as_user(clone, "push", "--quiet", "origin", "HEAD:main", askpass=askpass)
    applied = wait_for_label("argocd", "homelab.test/push-probe", probe, 180)
    git_as_user(clone, "revert", "--no-edit", "HEAD", askpass=askpass)
    git_as_user(clone, "push", "--quiet", "origin", "HEAD:main", askpass=askpass)
    reverted = wait_for_label("argocd", "homelab.test/push-probe", None, 180)
    print(f"\npush to applied: {applied:.1f} s; revert pushed to applied: {reverted:.1f} s")
    # The gitops role's next run (test_second_run_changes_nothing) fast-forwards over both
    # commits and finds its files as it wrote them.


def render_example_tree(tmp_path: Path) -> Path:
    """inventory/example's tree (every component and app on), rendered offline as
    `make validate-tree` does: the lab itself runs only what its mirror can serve."""
    tree = tmp_path / "example-tree"
    ansible_playbook(
        str(REPO / "playbooks/gitops.yml"),
        "-i",
        str(REPO / "inventory/example"),
        "-e",
        f"gitops_repo_local_path={tree}",
        "-e",
        '{"gitops_push": false}',
        "-e",
        f"download_mirror_url=file://{CACHE}/mirror/files",
        log="render-example-tree",
    )
    return tree


def test_the_whole_tree_passes_a_server_side_dry_run(first_run: LabRun, tmp_path: Path) -> None:
    """Every object ArgoCD would apply for inventory/example's tree, through the lab's real API
    server (tools/dry_run_tree.py).

    What the tool created for the run (CRDs, namespaces) it deletes again, so the reruns below
    see the cluster the playbooks left.
    """
    tree = render_example_tree(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "dry_run_tree.py"),
            str(tree),
            "--kubeconfig",
            str(CACHE / "lab" / "admin.conf"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    (LOGS / "dry-run-tree.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]


def test_second_run_changes_nothing(first_run: LabRun) -> None:
    rerun = lab_up("second-run", "--skip-build")
    assert rerun.returncode == 0, rerun.output[-6000:]
    print(f"\nno-op rerun (lab.py up --skip-build): {rerun.seconds:.0f} s")
    assert rerun.changed and not any(rerun.changed.values()), rerun.changed


def vip_holder() -> str | None:
    for name in CONTROL_PLANES:
        if f"inet {VIP}/" in node_exec(name, "ip", "-4", "-o", "addr", check=False):
            return name
    return None


def test_vip_moves_when_its_node_stops(first_run: LabRun) -> None:
    holder = vip_holder()
    assert holder, "no control plane holds the VIP"
    survivors = [name for name in CONTROL_PLANES if name != holder]
    start = time.monotonic()
    subprocess.run(["docker", "stop", "--time", "0", holder], check=True, capture_output=True)
    try:
        deadline = start + 60
        while not https_ok(f"https://{VIP}:{VIP_PORT}/readyz", 1):
            assert time.monotonic() < deadline, "the API did not answer on the VIP within 60 s"
            time.sleep(0.2)
        seconds = time.monotonic() - start
        new_holder = next(name for name in survivors if f"inet {VIP}/" in node_exec(name, "ip", "-4", "-o", "addr"))
        print(f"\nVIP failover: {holder} stopped, {new_holder} took the VIP, API answered after {seconds:.1f} s")
    finally:
        subprocess.run(["docker", "start", holder], check=True, capture_output=True)
    # The stopped node comes back as a member: its API server answers and etcd is whole again.
    deadline = time.monotonic() + 300
    while not https_ok(f"https://{ADDRESSES[holder]}:6443/readyz"):
        assert time.monotonic() < deadline, f"{holder}'s API server did not come back after a restart"
        time.sleep(2)
    test_etcd_has_three_healthy_members(first_run)


@pytest.mark.parametrize("new_worker", ["worker3"])
def test_adding_a_worker_changes_nothing_else(first_run: LabRun, new_worker: str) -> None:
    grown = lab_up("add-worker", "--skip-build", "--workers", "3")
    assert grown.returncode == 0, grown.output[-6000:]
    print(f"\nadding one worker by rerun: {grown.seconds:.0f} s")
    assert new_worker in nodes()
    others = {host: n for host, n in grown.changed.items() if host != new_worker}
    assert not any(others.values()), others


def test_growing_the_control_plane_from_three_to_five(first_run: LabRun) -> None:
    """Two more control planes by rerun: they join one at a time, etcd grows to five healthy
    members, and only the control planes' load balancer configuration changes elsewhere."""
    grown = lab_up("grow-control-planes", "--skip-build", "--workers", "3", "--control-planes", "5")
    assert grown.returncode == 0, grown.output[-6000:]
    print(f"\ngrowing the control plane from 3 to 5 by rerun: {grown.seconds:.0f} s")
    registered = nodes()
    for name in ("cp4", "cp5"):
        assert "node-role.kubernetes.io/control-plane" in registered[name]["metadata"]["labels"], name
        assert https_ok(f"https://172.30.0.{10 + int(name[2:])}:6443/readyz"), name
    members = etcd_health()
    assert len(members) == 5, members
    assert all(member["health"] for member in members), members
    # Workers are untouched; the existing control planes only learn about the new API servers
    # (HAProxy backends, keepalived peers).
    workers = {host: n for host, n in grown.changed.items() if host.startswith("worker")}
    assert not any(workers.values()), workers
    assert https_ok(f"https://{VIP}:{VIP_PORT}/readyz")


# A bootstrap token (kubeadm's [a-z0-9]{6}.[a-z0-9]{16}) or certificate key on a command line.
# Not the temporary files Cilium writes its CNI configuration through (cilium.conflist<digits>),
# which have the same shape.
TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.(?!conflist)[a-z0-9]{16}\b")
CERT_KEY_RE = re.compile(r"certificate[-_]key[\"'=:\s]+[0-9a-f]{64}", re.I)


def test_no_join_secret_in_logs_or_config(first_run: LabRun) -> None:
    """Join tokens and certificate keys appear neither in the playbook output nor on disk."""
    for name in ("first-run", "second-run", "add-worker", "grow-control-planes"):
        log = LOGS / f"{name}.log"
        if log.exists():
            text = log.read_text()
            assert not TOKEN_RE.search(text), f"{name}: bootstrap token in the output"
            assert not CERT_KEY_RE.search(text), f"{name}: certificate key in the output"
    for node in CONTROL_PLANES + WORKERS:
        leftovers = node_exec(node, "sh", "-c", "grep -rlE 'token: *[a-z0-9]{6}\\.' /etc/kubernetes || true")
        assert not leftovers.strip(), f"{node}: files with a bootstrap token: {leftovers}"
        journal = node_exec(node, "journalctl", "--no-pager", "-o", "cat")
        assert not TOKEN_RE.search(journal), f"{node}: bootstrap token in the journal"
