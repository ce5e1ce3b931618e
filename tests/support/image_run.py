"""Runs one platform's image as a real container with runc and checks how it behaves.

Usage: python3 image_run.py BUNDLE [--without-df]   (a bundle from `umoci unpack`; as root)

The amd64 image runs natively; an arm image runs through binfmt_misc (qemu-arm-static
registered with the F flag, see ci/deps), so its Python re-executes itself inside the
container as on a Pi. The stand-in bot needs from the image what the real bot needs
(`/bin/df -k -P -l` every cycle, /proc/meminfo, re-exec of its interpreter).
--without-df removes /usr/bin/df from the bundle first and checks the opposite: the
stand-in bot dies on its first cycle with the real bot's FileNotFoundError, so the
positive run cannot pass on an image without df.

The container gets its own PID, mount, IPC and UTS namespaces but shares the host's
network namespace (removed from config.json), so it reaches servers on the host's
loopback and the host reaches its status port. On the host, the script starts the
stand-in Swarming server (fake_swarming.py, serving the stand-in bot with the image's own
hook script, `test_machine_monitor bot-config`, injected) and a real adb server on a
private port with one simulated phone (adb_sim.py). The token config is bind-mounted at
/etc/swarming_config/ in the container; --adb-server points at the host's adb server, so
the container's own adb is not started (one already listens). Checks, in order:
  1. our binary is PID 1 (NSpid in the host's /proc, and /proc/1/cmdline seen from a
     `runc exec` of the image's own Python);
  2. /healthz answers 200 on the metrics port;
  3. the bot zip was downloaded into the container's /b/s, and the bot runs on the
     image's own Python (its memory maps the rootfs's python3.11, by device and inode),
     from the swarming_bot.1.zip it copied and re-executed itself on;
  4. the hooks are answered with the phone's dimensions (what reached the stand-in
     server: the phone's device_type, android_devices 1, the bot id), and the bot's own
     state has its disks from the image's df, its RAM from /proc/meminfo, and none of
     the optional host tools (lspci, dpkg, lsblk, pip: absent, tolerated);
  4b. an `update` re-executes the bot in place (same PID) on the new copy, and it
     handshakes again;
  5. the sudo shim kills the bot (the server sends host_reboot; the bot runs
     `sudo -n /sbin/shutdown -r now`), the bot is restarted (bot_restarts_total 1 on
     /metrics) and reports again;
  6. the bot leaves two orphans, one exits at once: no zombie is left among the
     container's processes;
  7. `runc kill <id> TERM` ends it within the grace period, exit code 0;
  8. nothing the script started on the host is left running.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

GRACE = 25
BOT_ID = "runc-pi"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from helpers import GaveUp, adb_request, free_port, http_status, read_line, stop, wait_for, wait_listening
ADB = "/usr/bin/adb"


def fail(msg):
    sys.exit(f"image_run: FAIL: {msg}")


def runc(state, *args, check=True, **kw):
    p = subprocess.run(["runc", "--root", state, *args], capture_output=True, text=True, timeout=60, **kw)
    if check and p.returncode != 0:
        fail(f"runc {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def prepare(bundle, args, swarming_config):
    path = os.path.join(bundle, "config.json")
    config = json.load(open(path))
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/etc/swarming_config"]
    config["mounts"].append({"destination": "/etc/swarming_config", "type": "bind",
                             "source": swarming_config, "options": ["rbind", "ro"]})
    # The bot's directory is a fresh volume in a pod: a zip left by an earlier run of
    # this bundle would point the stand-in bot at that run's server.
    shutil.rmtree(os.path.join(bundle, "rootfs", "b", "s"), ignore_errors=True)
    ns = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [n for n in ns if n["type"] != "network"]
    if not any(n["type"] == "pid" for n in config["linux"]["namespaces"]):
        fail("the bundle's config has no PID namespace")
    config["process"]["args"] = config["process"]["args"][:1] + args
    config["process"]["terminal"] = False
    json.dump(config, open(path, "w"), indent=1)
    return config["process"]["args"]


def host_pid(state, cid):
    def running():
        p = runc(state, "state", cid, check=False)
        if p.returncode == 0:
            st = json.loads(p.stdout)
            if st["status"] == "running" and st.get("pid"):
                return st["pid"]
        return None
    return wait_for(f"container {cid} to reach the running state", running, 20)


def guest_argv(pid):
    """A process's argv as the program sees it. Under binfmt_misc with the P flag the
    kernel runs `<interpreter> <path> <argv...>`: drop the first two."""
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    if argv and argv[0].endswith(b"-binfmt-P"):
        argv = argv[2:]
    return argv


def arm_rootfs(rootfs):
    """True when the image's binaries are 32-bit ARM (ELF e_machine 0x28)."""
    with open(os.path.join(rootfs, "usr/bin/python3.11"), "rb") as f:
        head = f.read(20)
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 0x28


def check_binfmt():
    entry = "/proc/sys/fs/binfmt_misc/qemu-arm"
    try:
        text = open(entry).read()
    except OSError as e:
        fail(f"an arm image needs qemu-arm registered in binfmt_misc ({entry}: {e}); ci/deps registers it")
    flags = [l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("flags:")]
    if not text.startswith("enabled") or not flags or "F" not in flags[0]:
        fail(f"{entry} must be enabled with the F flag (the interpreter opened at registration, "
             f"so it works inside the container's root): {text.strip()}")
    print(f"ok: binfmt_misc runs arm programs through qemu (flags {flags[0]})")


def check_pid1(state, cid, pid):
    status = open(f"/proc/{pid}/status").read()
    nspid = [l.split()[1:] for l in status.splitlines() if l.startswith("NSpid:")][0]
    if nspid[-1] != "1":
        fail(f"the container's init has NSpid {nspid}, expected it to be 1 inside")
    cmd = guest_argv(pid)[0].decode()
    if cmd != "/usr/bin/test_machine_monitor":
        fail(f"PID 1 is {cmd!r}")
    p = runc(state, "exec", cid, "/usr/bin/python3", "-c",
             "a = open('/proc/1/cmdline').read().split(chr(0)); "
             "print(a[2] if a[0].endswith('-binfmt-P') else a[0])")
    if p.stdout.strip() != "/usr/bin/test_machine_monitor":
        fail(f"inside, /proc/1/cmdline is {p.stdout.strip()!r} ({p.stderr.strip()})")
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


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            # The first series of the family, labelled (bot_up{bot="..."}) or not.
            if line.startswith((f"test_machine_monitor_{name} ", f"test_machine_monitor_{name}{{")):
                return float(line.rsplit(None, 1)[1])
    return None


def wait_until(what, f, proc, limit=60):
    return wait_for(what, f, limit, every=0.2, proc=proc)


class Host:
    """What runs on the host: the stand-in server, the adb server, the simulated phone."""

    def __init__(self, tmp, rootfs):
        self.tmp = tmp
        self.procs = []
        hook_script = os.path.join(tmp, "bot_config.py")
        with open(hook_script, "wb") as f:
            subprocess.run([os.path.join(rootfs, "usr/bin/test_machine_monitor"), "bot-config"], stdout=f, check=True,
                           timeout=60)
        p = self.spawn([sys.executable, os.path.join(HERE, "fake_swarming.py"), "--port", "0",
                        "--hook-script", hook_script], "swarming.log")
        self.server = f"http://127.0.0.1:{int(read_line(p.stdout, 'fake_swarming.py port', 60).split()[1])}"
        http_json("POST", self.server + "/_control", {"poll_sleep": 1.0})
        self.swarming_config = os.path.join(tmp, "swarming_config")
        os.makedirs(self.swarming_config)
        with open(os.path.join(self.swarming_config, "oauth2_access_token_config.json"), "w") as f:
            json.dump({"url": self.server + "/token", "headers": {"Metadata-Flavor": "Google"}}, f)
        self.adb_port = free_port()
        home = os.path.join(tmp, "home")
        os.makedirs(home)
        self.spawn([ADB, "-P", str(self.adb_port), "nodaemon", "server"], "adb.log", env=dict(os.environ, HOME=home))
        wait_listening(self.adb_port, f"the host's adb server to listen on {self.adb_port}", 20)
        p = self.spawn([sys.executable, os.path.join(HERE, "adb_sim.py"), "--phone", "modern:phone"], "phone.log")
        self.phone_port = int(read_line(p.stdout, "adb_sim.py's port", 60).split()[1])
        adb_request(self.adb_port, f"host:connect:127.0.0.1:{self.phone_port}", timeout=15)
        print(f"host: stand-in Swarming server {self.server}, adb server 127.0.0.1:{self.adb_port} "
              f"with a simulated phone 127.0.0.1:{self.phone_port}")

    def spawn(self, argv, log, env=None):
        logf = open(os.path.join(self.tmp, log), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                             env=env, text=True, start_new_session=True)
        logf.close()
        self.procs.append(p)
        return p

    def state(self):
        return http_json("GET", self.server + "/_state")

    def stop(self):
        for p in reversed(self.procs):
            stop(p, 5)
        left = [p.pid for p in self.procs if os.path.exists(f"/proc/{p.pid}")]
        if left:
            fail(f"left running on the host: {left}")
        print(f"ok: the host's stand-in server, adb server and phone (pids {' '.join(str(p.pid) for p in self.procs)}) are stopped")


BOT_ZIP = re.compile(rb"(^|/)swarming_bot(\.\d)?\.zip$")


def bot_pid(state, cid):
    """The container's process running swarming_bot[.N].zip, as a host pid, or None."""
    p = runc(state, "ps", "--format", "json", cid, check=False)
    for pid in json.loads(p.stdout or "[]") or []:
        try:
            argv = guest_argv(pid)
        except OSError:
            continue
        if any(BOT_ZIP.search(a) for a in argv):
            return pid
    return None


def maps_file(pid, path):
    """True when the process has the file at `path` (by device and inode) mapped: its
    program, even when qemu is the process's executable."""
    st = os.stat(path)
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6:
            major, minor = (int(x, 16) for x in f[3].split(":"))
            if int(f[4]) == st.st_ino and os.makedev(major, minor) == st.st_dev:
                return True
    return False


def check_bot(state, cid, pid1, rootfs, proc):
    zip_path = f"/proc/{pid1}/root/b/s/swarming_bot.zip"
    wait_until("the bot zip in the container's /b/s", lambda: os.path.exists(zip_path), proc)
    # The stand-in re-executes itself on its copy at once, as the real bot does.
    def on_copy():
        b = bot_pid(state, cid)
        return b if b and any(a.endswith(b"swarming_bot.1.zip") for a in guest_argv(b)) else None
    bot = wait_until("the bot running from swarming_bot.1.zip", on_copy, proc)
    python = os.path.join(rootfs, "usr/bin/python3.11")
    # Right after an exec under qemu the new argv can be read before qemu has mapped
    # the program it emulates: wait for the mapping rather than look once.
    try:
        wait_until("the bot to map the image's python3.11", lambda: maps_file(bot, python), proc, limit=30)
    except GaveUp:
        fail(f"the bot (host pid {bot}, exe {os.readlink(f'/proc/{bot}/exe')}) does not run the image's python3.11")
    print(f"ok: the bot zip was downloaded into the container's /b/s ({os.path.getsize(zip_path)} bytes); "
          f"the bot (host pid {bot}) re-executed the image's own Python on swarming_bot.1.zip "
          f"(exe {os.readlink(f'/proc/{bot}/exe')})")
    return bot


def check_hooks(host, proc):
    def reported():
        dims = host.state().get("last_dimensions") or {}
        ok = (dims.get("device_type") == ["redfin"] and "1" in dims.get("android_devices", [])
              and dims.get("id") == [BOT_ID] and dims.get("os") == ["Android"])
        return dims if ok else None
    dims = wait_until("the phone's dimensions at the stand-in server", reported, proc)
    print("ok: the hooks answer with the phone's dimensions: "
          + " ".join(f"{k}={','.join(v)}" for k, v in sorted(dims.items()) if k in
                     ("id", "os", "device_type", "android_devices", "device_os", "pool")))
    st = host.state().get("last_state") or {}
    disks, ram, tools = st.get("disks"), st.get("ram"), st.get("host_tools")
    if not disks or "/" not in disks or not isinstance(ram, int) or ram <= 0 or tools != []:
        fail(f"the bot's own state lacks what the image's df and /proc give: disks={disks} ram={ram} "
             f"host_tools={tools}")
    print(f"ok: the bot's state has its disks from the image's df ({', '.join(sorted(disks))}), "
          f"ram {ram} MB from /proc/meminfo, and no optional host tool (tolerated)")


def check_update(state, cid, host, bot, proc):
    handshakes = host.state()["handshakes"]
    http_json("POST", host.server + "/_control", {"bot_cmds": [{"cmd": "update", "version": host.state()["digest"]}]})
    def on_new_copy():
        return any(a.endswith(b"swarming_bot.2.zip") for a in guest_argv(bot))
    wait_until("the bot re-executed on swarming_bot.2.zip", on_new_copy, proc)
    wait_until("the updated bot's handshake", lambda: host.state()["handshakes"] > handshakes, proc)
    print(f"ok: on update the bot re-executed itself in place (pid {bot}) on swarming_bot.2.zip and handshook again")


def check_sudo_restart(state, cid, host, metrics, old_bot, proc):
    handshakes = host.state()["handshakes"]
    http_json("POST", host.server + "/_control", {"bot_cmds": [{"cmd": "host_reboot"}]})
    wait_until("bot_restarts_total 1", lambda: metric(metrics, "bot_restarts_total") == 1, proc)
    new_bot = wait_until("a new bot process", lambda: (lambda b: b if b and b != old_bot else None)(bot_pid(state, cid)), proc)
    wait_until("the restarted bot's handshake", lambda: host.state()["handshakes"] > handshakes, proc)
    print(f"ok: on host_reboot the bot ran `sudo -n /sbin/shutdown -r now`, the shim killed it (pid {old_bot}), "
          f"and it was restarted (pid {new_bot}, bot_restarts_total 1, handshook again)")


def orphan_processes(state, cid, host, proc):
    """Has the bot leave two orphans (one exits at once): PID 1 must reap the one that
    exits, and the other is the container's to end."""
    before = set(json.loads(runc(state, "ps", "--format", "json", cid).stdout) or [])
    http_json("POST", host.server + "/_control", {"bot_cmds": [{"cmd": "orphan"}]})
    new = wait_until("the bot's orphan", lambda: set(json.loads(runc(state, "ps", "--format", "json", cid).stdout) or []) - before, proc)
    time.sleep(1.5)  # the short-lived orphan (0.2 s) has exited: a zombie unless reaped
    print(f"ok: the bot left orphans (host pids {' '.join(map(str, sorted(new)))}), one of them exited")


def check_without_df(proc, log_path):
    """The container's log must show the stand-in bot dying on the missing /bin/df."""
    def died():
        text = open(log_path).read()
        return "FileNotFoundError" in text and "/bin/df" in text
    wait_until("the bot's FileNotFoundError for /bin/df", died, proc)
    print("ok: without /bin/df the stand-in bot dies on its first cycle with FileNotFoundError, "
          "as the real bot does")


def main():
    args = sys.argv[1:]
    without_df = "--without-df" in args
    args = [a for a in args if a != "--without-df"]
    if len(args) != 1:
        sys.exit(__doc__.split("\n\n")[1])
    bundle = os.path.abspath(args[0])
    rootfs = os.path.join(bundle, "rootfs")
    if arm_rootfs(rootfs):
        check_binfmt()
    if without_df:
        os.unlink(os.path.join(rootfs, "usr/bin/df"))
    state = os.path.join(os.path.dirname(bundle), "runc-state")
    cid = f"tmm-test-{os.getpid()}"
    metrics = free_port()
    tmp = tempfile.mkdtemp(prefix="image-run-")
    try:
        host = Host(tmp, rootfs)
    except GaveUp as e:
        fail(e)
    proc = None
    log = open(os.path.join(os.path.dirname(bundle), "container.log"), "w")
    try:
        args = prepare(
            bundle,
            [
                f"--swarming-server={host.server}",
                f"--bot-id={BOT_ID}",
                f"--adb-server=127.0.0.1:{host.adb_port}",
                "--interrogate-every=2",
                f"--grace={GRACE}",
                f"--metrics-addr=127.0.0.1:{metrics}",
                f"--hook-addr=127.0.0.1:{free_port()}",
            ],
            host.swarming_config,
        )
        proc = subprocess.Popen(["runc", "--root", state, "run", "--bundle", bundle, cid], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        pid = host_pid(state, cid)
        print(f"container {cid} runs {' '.join(args)}")
        check_pid1(state, cid, pid)
        code = wait_for("/healthz to answer", lambda: http_status(f"http://127.0.0.1:{metrics}/healthz"), 20, proc=proc)
        if code != 200:
            fail(f"/healthz answered {code}")
        print(f"ok: /healthz answers 200 from inside the container on 127.0.0.1:{metrics}")
        if without_df:
            log.flush()
            check_without_df(proc, log.name)
            check_term(state, cid, proc)
            return
        bot = check_bot(state, cid, pid, rootfs, proc)
        check_hooks(host, proc)
        check_update(state, cid, host, bot, proc)
        check_sudo_restart(state, cid, host, metrics, bot, proc)
        orphan_processes(state, cid, host, proc)
        check_no_zombies(state, cid)
        check_term(state, cid, proc)
    except GaveUp as e:
        fail(e)
    finally:
        if proc is not None and proc.poll() is None:
            runc(state, "kill", cid, "KILL", check=False)
            proc.wait(timeout=10)
        runc(state, "delete", "--force", cid, check=False)
        log.close()
        print("container log:\n" + open(log.name).read().rstrip())
        host.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
