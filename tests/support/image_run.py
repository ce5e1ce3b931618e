"""Runs the amd64 image as a real container with runc and checks how it behaves.

Usage: python3 image_run.py BUNDLE   (a bundle from `umoci unpack`; run as root)

The container gets its own PID, mount, IPC and UTS namespaces but shares the host's
network namespace (removed from config.json), so it reaches servers on the host's
loopback and the host reaches its status port. Checks, in order:
  1. our binary is PID 1 (NSpid in the host's /proc, and /proc/1/cmdline seen from a
     `runc exec` of the image's own Python);
  2. /healthz answers 200 on the metrics port;
  3. no zombie is left among the container's processes;
  4. `runc kill <id> TERM` ends it within the grace period, exit code 0.
The full run (bot zip from tests/support/fake_swarming.py, the bot on the image's
Python, hooks, the sudo shim) slots in between checks 2 and 3 in main().
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

GRACE = 25


def fail(msg):
    sys.exit(f"image_run: FAIL: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runc(state, *args, check=True, **kw):
    p = subprocess.run(["runc", "--root", state, *args], capture_output=True, text=True, timeout=60, **kw)
    if check and p.returncode != 0:
        fail(f"runc {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def prepare(bundle, args):
    path = os.path.join(bundle, "config.json")
    config = json.load(open(path))
    ns = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [n for n in ns if n["type"] != "network"]
    if not any(n["type"] == "pid" for n in config["linux"]["namespaces"]):
        fail("the bundle's config has no PID namespace")
    config["process"]["args"] = config["process"]["args"][:1] + args
    config["process"]["terminal"] = False
    json.dump(config, open(path, "w"), indent=1)
    return config["process"]["args"]


def host_pid(state, cid):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        p = runc(state, "state", cid, check=False)
        if p.returncode == 0:
            st = json.loads(p.stdout)
            if st["status"] == "running" and st.get("pid"):
                return st["pid"]
        time.sleep(0.1)
    fail(f"container {cid} never reached the running state")


def wait_http(url, proc):
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"{url} never answered (container exit {proc.poll()})")
            time.sleep(0.1)


def check_pid1(state, cid, pid):
    status = open(f"/proc/{pid}/status").read()
    nspid = [l.split()[1:] for l in status.splitlines() if l.startswith("NSpid:")][0]
    if nspid[-1] != "1":
        fail(f"the container's init has NSpid {nspid}, expected it to be 1 inside")
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
    if cmd != "/usr/bin/test_machine_monitor":
        fail(f"PID 1 is {cmd!r}")
    p = runc(state, "exec", cid, "/usr/bin/python3", "-c", "print(open('/proc/1/cmdline').read().split(chr(0))[0])")
    if p.stdout.strip() != "/usr/bin/test_machine_monitor":
        fail(f"inside, /proc/1/cmdline is {p.stdout.strip()!r}")
    print(f"ok: test_machine_monitor is PID 1 (host PID {pid}, NSpid {' '.join(nspid)}); runc exec of the image's python3 sees it")


def check_no_zombies(state, cid):
    p = runc(state, "ps", "--format", "json", cid)
    pids = json.loads(p.stdout) or []
    zombies = []
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if fields[0] == "Z":
            zombies.append(pid)
    if zombies:
        fail(f"zombies in the container: {zombies}")
    print(f"ok: no zombies among the container's {len(pids)} processes")


def check_term(state, cid, proc):
    t = time.monotonic()
    runc(state, "kill", cid, "TERM")
    try:
        code = proc.wait(timeout=GRACE + 5)
    except subprocess.TimeoutExpired:
        runc(state, "kill", cid, "KILL", check=False)
        proc.wait(timeout=10)
        fail(f"SIGTERM did not end the container within {GRACE + 5}s")
    took = time.monotonic() - t
    if code != 0:
        fail(f"after SIGTERM the container exited {code}, expected 0")
    print(f"ok: runc kill TERM ended it in {took:.1f}s (grace {GRACE}s), exit code 0")


def main():
    bundle = os.path.abspath(sys.argv[1])
    state = os.path.join(os.path.dirname(bundle), "runc-state")
    cid = f"tmm-test-{os.getpid()}"
    metrics = free_port()
    args = prepare(
        bundle,
        [
            "--no-bot",
            "--devices=none",
            f"--grace={GRACE}",
            f"--metrics-addr=127.0.0.1:{metrics}",
            f"--hook-addr=127.0.0.1:{free_port()}",
        ],
    )
    log = open(os.path.join(os.path.dirname(bundle), "container.log"), "w")
    proc = subprocess.Popen(["runc", "--root", state, "run", "--bundle", bundle, cid], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        pid = host_pid(state, cid)
        print(f"container {cid} runs {' '.join(args)}")
        check_pid1(state, cid, pid)
        code = wait_http(f"http://127.0.0.1:{metrics}/healthz", proc)
        if code != 200:
            fail(f"/healthz answered {code}")
        print(f"ok: /healthz answers 200 from inside the container on 127.0.0.1:{metrics}")
        check_no_zombies(state, cid)
        check_term(state, cid, proc)
    finally:
        if proc.poll() is None:
            runc(state, "kill", cid, "KILL", check=False)
            proc.wait(timeout=10)
        runc(state, "delete", "--force", cid, check=False)
        log.close()
        print("container log:\n" + open(log.name).read().rstrip())


if __name__ == "__main__":
    main()
