"""Runs the binary the way the rendered DaemonSet would, and checks probe ports and paths.

Usage: python3 manifest_check.py RENDERED.yaml BINARY WORKDIR

Called by ci/test-manifests. Each volume mount becomes a directory under WORKDIR holding
fixtures (ConfigMap items from the rendered ConfigMap; made-up Secret contents with
recognisable secrets); every path under a mount point, in the args or among the
binary's own defaults, is rewritten to point there. Needs PyYAML (a dependency of
kubernetes-validate) to read the rendered YAML.
"""
import json
import os
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import GaveUp, free_port, http_status, stop, wait_for

NODE = "pi-rack-a-07"
SECRETS = {
    # The token endpoint's headers may carry credentials: never printed.
    "swarming-token-config": {
        "oauth2_access_token_config.json": json.dumps(
            {"url": "http://127.0.0.1:9/token", "headers": {"X-Token-Secret": "s3cr3t-header-value"}}
        )
    },
    "adb-keys": {
        "adbkey": "-----BEGIN PRIVATE KEY-----\nADBKEY-PRIVATE-PART\n-----END PRIVATE KEY-----\n",
        "adbkey.pub": "QAAAAADBKEY-PUBLIC-PART test@host\n",
    },
}
SECRET_MARKERS = ["s3cr3t-header-value", "ADBKEY-PRIVATE-PART"]


def fail(msg):
    sys.exit(f"manifest_check: FAIL: {msg}")


def load(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def fixtures(pod, configmaps, workdir):
    """Mount path -> fixture directory, filled like the kubelet would fill it."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    container = pod["containers"][0]
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        d = os.path.join(workdir, m["name"])
        os.makedirs(d, exist_ok=True)
        if "configMap" in v:
            data = configmaps[v["configMap"]["name"]]["data"]
            items = v["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for it in items:
                open(os.path.join(d, it["path"]), "w").write(data[it["key"]])
        elif "secret" in v:
            name = v["secret"]["secretName"]
            if name not in SECRETS:
                fail(f"no fixture for Secret {name}: add one to SECRETS")
            for k, content in SECRETS[name].items():
                open(os.path.join(d, k), "w").write(content)
        mounts[m["mountPath"].rstrip("/")] = d
    return mounts


def rewrite(value, mounts):
    for mount, d in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if value == mount or value.startswith(mount + "/"):
            return d + value[len(mount):]
    return value


def rewrite_arg(arg, mounts):
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={rewrite(value, mounts)}"
    return rewrite(arg, mounts)


def container_env(container, configmaps):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        src = e["valueFrom"]
        if "fieldRef" in src:
            if src["fieldRef"]["fieldPath"] != "spec.nodeName":
                fail(f"env {e['name']}: unexpected fieldRef {src['fieldRef']}")
            env[e["name"]] = NODE
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            env[e["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
        else:
            fail(f"env {e['name']}: unsupported source {src}")
    return env


def check_config(binary, args, env):
    p = subprocess.run([binary, *args, "--check-config"], env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        fail(f"--check-config exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout, dict(line.split(" = ", 1) for line in p.stdout.splitlines() if " = " in line)


# Flags whose effective value is a path, keyed by --check-config's names.
PATH_FLAGS = {
    "bot_dir": "--bot-dir",
    "token_config": "--token-config",
    "settings": "--settings",
    "force_quarantine_file": "--force-quarantine-file",
}


def check_rbac(kinds, sa, pod):
    """Least privilege: get/list/watch on nodes, create/patch on events in the pod's
    namespace, bound to the pod's account, and nothing else."""
    ns = sa["metadata"].get("namespace")
    if pod.get("serviceAccountName") != sa["metadata"]["name"]:
        fail("the pod does not run as the ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ns}
    (cr,) = kinds["ClusterRole"]
    (role,) = kinds["Role"]
    want = {
        cr["metadata"]["name"]: [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
        role["metadata"]["name"]: [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}],
    }
    for r in (cr, role):
        if r["rules"] != want[r["metadata"]["name"]]:
            fail(f"{r['kind']} {r['metadata']['name']} grants {r['rules']}, expected exactly {want[r['metadata']['name']]}")
    if role["metadata"].get("namespace") != ns:
        fail(f"the events Role is in {role['metadata'].get('namespace')}, not the pod's namespace {ns}")
    for binding, target in ((kinds["ClusterRoleBinding"], cr), (kinds["RoleBinding"], role)):
        (b,) = binding
        if b["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": target["kind"], "name": target["metadata"]["name"]}:
            fail(f"{b['kind']} {b['metadata']['name']} binds {b['roleRef']}")
        subjects = [dict(s, namespace=s.get("namespace", b["metadata"].get("namespace"))) for s in b["subjects"]]
        if subjects != [subject]:
            fail(f"{b['kind']} {b['metadata']['name']} binds {b['subjects']}, expected only {subject}")
    print("ok: RBAC is get/list/watch on nodes and create/patch on events in the namespace, bound to the pod's account")


def check_pod_shape(kinds, ds, pod, container):
    """What issue 10 asks of the DaemonSet that --check-config cannot see."""
    for kind in ("Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "ClusterRole",
                 "ClusterRoleBinding", "Role", "RoleBinding"):
        if not kinds.get(kind):
            fail(f"no {kind} in the rendered manifests")
    (sa,) = kinds["ServiceAccount"]
    if sa.get("automountServiceAccountToken") is not True or pod.get("automountServiceAccountToken") is not True:
        fail("the ServiceAccount token must be mounted (the node's notes, the node's events)")
    check_rbac(kinds, sa, pod)
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        fail("the container needs NODE_NAME from the downward API's spec.nodeName")
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in terms:  # every term must both require the label and exclude control planes
        exprs = {(e["key"], e["operator"]): e.get("values") for e in term["matchExpressions"]}
        if exprs.get(("test-machine-monitor/device-host", "In")) != ["true"]:
            fail(f"a node selector term does not require test-machine-monitor/device-host=true: {term}")
        for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
            if (key, "DoesNotExist") not in exprs:
                fail(f"a node selector term does not exclude {key}: {term}")
    sc = container.get("securityContext", {})
    if sc.get("privileged") is not True or sc.get("runAsUser") != 0:
        fail(f"the container must be privileged and run as root: {sc}")
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {v["hostPath"]["path"]: v["hostPath"].get("type") for v in volumes.values() if "hostPath" in v}
    if host_paths.get("/dev/bus/usb") != "Directory":
        fail(f"/dev/bus/usb must be a hostPath Directory (the whole bus), got {host_paths}")
    others = {p: t for p, t in host_paths.items() if p != "/dev/bus/usb"}
    if len(others) != 1 or list(others.values()) != ["DirectoryOrCreate"]:
        fail(f"the only other host access must be the bot's DirectoryOrCreate hostPath, got {others}")
    if container.get("imagePullPolicy") != "IfNotPresent":
        fail("imagePullPolicy must be IfNotPresent")
    print("ok: affinity, privileges, host paths, service account and pull policy as required")


# What the binary needs after its bots are gone: the adb server's stop (3 s, then SIGKILL
# and up to 5 s), the leftovers' SIGKILL and our own exit; 10 s, plus 5 s of margin.
SHUTDOWN_MARGIN = 15


def check_shutdown_budget(ds, pod, effective):
    """SIGKILL from the kubelet must never come before the binary's drain limit and
    grace have run out, and a rollout drains a bounded share of the Pis at once."""
    grace = int(effective["grace"].rstrip("s"))
    drain = int(effective["drain_limit"].rstrip("s"))
    budget = drain + grace + SHUTDOWN_MARGIN
    given = pod["terminationGracePeriodSeconds"]
    if given < budget:
        fail(f"terminationGracePeriodSeconds {given} < --drain-limit {drain} + --grace {grace} "
             f"+ {SHUTDOWN_MARGIN} s for adb and the exit = {budget}: the kubelet's SIGKILL "
             f"would cut a draining task short")
    rolling = ds["spec"]["updateStrategy"]
    unavailable = str(rolling.get("rollingUpdate", {}).get("maxUnavailable", ""))
    if rolling.get("type") != "RollingUpdate" or not unavailable.endswith("%"):
        fail(f"the update strategy must be RollingUpdate with maxUnavailable as a percentage "
             f"(a rollout drains that share of the Pis at once), got {rolling}")
    if rolling["rollingUpdate"].get("maxSurge") != 0:
        fail(f"maxSurge must be 0 (never two pods on one Pi), got {rolling}")
    print(f"ok: terminationGracePeriodSeconds {given} >= --drain-limit {drain} + --grace {grace} "
          f"+ {SHUTDOWN_MARGIN}; rollouts drain {unavailable} of the Pis at once")


def main():
    rendered, binary, workdir = sys.argv[1:4]
    kinds = load(rendered)
    configmaps = {c["metadata"]["name"]: c for c in kinds.get("ConfigMap", [])}
    (ds,) = kinds["DaemonSet"]
    template = ds["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    check_pod_shape(kinds, ds, pod, container)
    os.makedirs(workdir, exist_ok=True)
    mounts = fixtures(pod, configmaps, workdir)
    env = container_env(container, configmaps)
    args = list(container.get("args", []))

    # Paths the binary would use by default that fall under a mount are rewritten too.
    # This first pass only learns those defaults; --no-bot keeps it from reading the
    # token config at its in-pod path, which does not exist here.
    rewritten = [rewrite_arg(a, mounts) for a in args]
    _, effective = check_config(binary, rewritten + ["--no-bot"], env)
    for key, flag in PATH_FLAGS.items():
        value = effective.get(key, "none")
        if value != "none" and rewrite(value, mounts) != value and not any(a.startswith(flag) for a in args):
            rewritten.append(f"{flag}={rewrite(value, mounts)}")
    out, effective = check_config(binary, rewritten, env)

    expect = {
        "swarming_server": env["SWARMING_SERVER"].rstrip("/"),
        "bot_id": NODE,
        "kubernetes": "auto",
        "bot_dir": os.path.join(mounts["/b"], "s"),
        "force_quarantine_file": os.path.join(mounts["/b"], f"{NODE}.force_quarantine"),
        "token_config": os.path.join(mounts["/etc/swarming_config"], "oauth2_access_token_config.json"),
    }
    for k, v in expect.items():
        if effective.get(k) != v:
            fail(f"--check-config says {k} = {effective.get(k)!r}, expected {v!r}\n{out}")
    for marker in SECRET_MARKERS:
        if marker in out:
            fail(f"--check-config printed the secret {marker!r}")
    check_shutdown_budget(ds, pod, effective)
    print(f"ok: --check-config accepts the DaemonSet's args and env ({len(rewritten)} args), no secret printed")

    # Ports: the named port, the probes and the scrape annotation all point at the port
    # the binary listens on, and the paths answer there.
    metrics_port = int(effective["metrics_addr"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ann = template["metadata"]["annotations"]
    probes = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        h = container[probe]["httpGet"]
        port = ports[h["port"]] if isinstance(h["port"], str) else h["port"]
        if port != metrics_port or h["path"] != path:
            fail(f"{probe} is {h['path']} on {port}, the binary serves {path} on {metrics_port}")
    if int(ann["prometheus.io/port"]) != metrics_port or ann.get("prometheus.io/scrape") != "true":
        fail(f"scrape annotations {ann} do not match the metrics port {metrics_port}")

    port = free_port()
    run_args = [a for a in rewritten if not a.startswith("--metrics-addr")]
    run_args += [f"--metrics-addr=127.0.0.1:{port}", "--no-bot", f"--hook-addr=127.0.0.1:{free_port()}"]
    proc = subprocess.Popen([binary, *run_args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        status = wait_for("the binary to answer on its metrics port",
                          lambda: {p: http_status(f"http://127.0.0.1:{port}{p}")
                                   for p in ["/healthz", "/readyz", ann["prometheus.io/path"]]},
                          20, proc=proc)
    except GaveUp as e:
        fail(e)
    finally:
        stop(proc, 30)
    # /readyz may say 503 before the first device round; it must exist (not 404).
    if status["/healthz"] != 200 or status["/readyz"] not in (200, 503) or status[ann["prometheus.io/path"]] != 200:
        fail(f"probe paths on a running binary answered {status}")
    print(f"ok: probes and scrape target match port {metrics_port}; a running binary answers {status}")


if __name__ == "__main__":
    main()
