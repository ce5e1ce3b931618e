"""A stand-in Swarming bot, run as `python3 swarming_bot.zip start_bot`.

It behaves like the real bot where the monitor can tell, and needs from its host what the
real bot needs (api/os_utilities.py: `/bin/df`, /proc, the optional tools). On start it
copies swarming_bot.zip to swarming_bot.1.zip and re-executes its interpreter on that copy
(same PID), as the real bot does. It reads config/config.json for its server, handshakes,
then each cycle calls the hooks of config/bot_config.py (when the server injected one) and
polls. On SIGTERM it does what luci's bot_main.py does: it sets its quit flag; idle, it
calls on_bot_shutdown, posts `bot_shutdown` and exits 0 at once; running a task, it takes
no new one, waits for the task (a subprocess in a process group of its own, so that a
signal to the bot's group does not reach it) to end, reports the result (task_update),
and only then shuts down the same way. Server commands (poll answers): sleep, run (a task:
{"cmd": "run", "duration": seconds, "ignore_sigterm": bool}, run between the
on_before_task and on_after_task hooks), bot_restart (re-exec, same PID), update
(fetches the version the server names, replaces swarming_bot.zip with it and
re-executes), host_reboot (runs `sudo -n /sbin/shutdown -r now`, then waits like the
real bot), and test-only ones: crash, ignore_sigterm, orphan. Environment switches for start-up: FAKE_BOT_CRASH=<code>
exits at once, FAKE_BOT_IGNORE_SIGTERM=1, FAKE_BOT_ORPHAN=1.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile

ZIP = os.path.abspath(sys.argv[0])


def log(msg):
    print("fake bot %d: %s" % (os.getpid(), msg), flush=True)


class Bot:
    """The object the hooks receive, with the attributes hook scripts use."""

    def __init__(self, server, dims, state):
        self.id = os.environ.get("SWARMING_BOT_ID", "unknown")
        self.server = server
        self.base_dir = os.getcwd()
        self.swarming_bot_zip = ZIP
        self.dimensions = dims
        self.state = state

    def post_error(self, message):
        log("bot_error: %s" % message)

    def host_reboot(self, message=None):
        host_reboot()

    def bot_restart(self, message=None):
        restart()


def load_hooks():
    try:
        from config import bot_config  # injected by the server
        return bot_config
    except ImportError:
        return None


def restart(zip_path=ZIP):
    log("re-executing %s" % os.path.basename(zip_path))
    os.execv(sys.executable, [sys.executable, zip_path, "start_bot"])


def start_from_copy():
    """The real bot never runs from swarming_bot.zip itself, which an update replaces:
    it copies it and re-executes its interpreter on the copy."""
    if os.path.basename(ZIP) == "swarming_bot.zip":
        copy = os.path.join(os.path.dirname(ZIP), "swarming_bot.1.zip")
        shutil.copyfile(ZIP, copy)
        restart(copy)


def update(server, version):
    """Fetches the named version into the other copy, makes it swarming_bot.zip (as the
    real bot does after a good update) and re-executes on it."""
    url = "%s/swarming/api/v1/bot/bot_code/%s" % (server, version)
    with urllib.request.urlopen(url, timeout=30) as resp:
        data = resp.read()
    here = os.path.dirname(ZIP)
    other = "swarming_bot.2.zip" if os.path.basename(ZIP) != "swarming_bot.2.zip" else "swarming_bot.1.zip"
    new = os.path.join(here, other)
    with open(new, "wb") as f:
        f.write(data)
    zipfile.ZipFile(new).testzip()
    tmp = os.path.join(here, "swarming_bot.zip.tmp")
    shutil.copyfile(new, tmp)
    os.replace(tmp, os.path.join(here, "swarming_bot.zip"))
    log("updated to %s" % version)
    restart(new)


def host_reboot():
    log("host reboot requested")
    # The real bot tries both and then waits up to 15 minutes for the reboot.
    subprocess.call(["sudo", "-n", "/sbin/shutdown", "-r", "now"])
    subprocess.call(["sudo", "-n", "/sbin/reboot", "-f"])
    QUIT.wait(900)


def orphan():
    """Leaves two orphans in a process group of their own, like task processes: one that
    exits soon (a zombie unless reaped) and one that sleeps."""
    for lifetime in (0.2, 3600):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                print("fake bot orphan %d: sleeping %s" % (os.getpid(), lifetime), flush=True)
                time.sleep(lifetime)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)


# The quit flag. As in bot_main.py, SIGTERM only sets it, and the loop looks at it
# between steps and waits on it instead of sleeping: a signal in the middle of a hook
# call or a task interrupts nothing (an exception raised there would reach code that is
# not the bot's, such as our hook script's own error handling).
QUIT = threading.Event()

# The task: sleeps for its duration, deaf to SIGTERM if told to be (then only SIGKILL
# cuts it short).
TASK = (
    "import os, signal, sys, time\n"
    "if sys.argv[2] == '1':\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('fake task %d: running for %ss' % (os.getpid(), sys.argv[1]), flush=True)\n"
    "time.sleep(float(sys.argv[1]))\n"
)


def on_sigterm(signum, frame):
    QUIT.set()


def run_task(cmd):
    """Runs the task in a process group of its own (the real bot's task runner is
    started detached) and waits for it; its exit code, negative for a signal."""
    duration = float(cmd.get("duration", 1))
    deaf = "1" if cmd.get("ignore_sigterm") else "0"
    proc = subprocess.Popen([sys.executable, "-c", TASK, str(duration), deaf],
                            preexec_fn=os.setpgrp)
    log("task pid %d in process group %d, for %ss" % (proc.pid, os.getpgid(proc.pid), duration))
    # Interrupted by a signal, wait() resumes (PEP 475): the handler does not raise now.
    return proc.wait()


def call(server, path, body, headers):
    data = json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method="POST")
    req.add_header("Content-Type", "application/json; charset=UTF-8")
    for k, v in headers.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "start_bot":
        log("usage: swarming_bot.zip start_bot")
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    if os.environ.get("SWARMING_EXTERNAL_BOT_SETUP") != "1":
        # The real bot would install its own auto-start (systemd, cron) and fight the
        # supervisor: refuse, so that a supervisor that forgets the variable fails tests.
        log("SWARMING_EXTERNAL_BOT_SETUP is not 1: the real bot would set up its own auto-start")
        return 3
    start_from_copy()
    log("starting in %s" % os.getcwd())
    # Invalid UTF-8 on purpose: the monitor must replace it, not drop the line.
    sys.stdout.buffer.write(b"fake bot bytes \xff\xfe end\n")
    sys.stdout.flush()
    if os.environ.get("FAKE_BOT_CRASH"):
        log("crashing as told")
        os._exit(int(os.environ["FAKE_BOT_CRASH"]))
    if os.environ.get("FAKE_BOT_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_BOT_ORPHAN"):
        orphan()

    config = json.loads(zipfile.ZipFile(ZIP).read("config/config.json"))
    server = config["server"]
    hooks = load_hooks()
    from api import os_utilities

    def attributes():
        dims = os_utilities.get_dimensions()
        state = os_utilities.get_state()
        bot = Bot(server, dims, state)
        headers = {}
        if hooks:
            dims = hooks.get_dimensions(bot)
            bot.dimensions = dims
            state = hooks.get_state(bot)
            bot.state = state
            if hasattr(hooks, "get_settings"):
                state["settings"] = hooks.get_settings(bot)
            if hasattr(hooks, "get_authentication_headers"):
                got = hooks.get_authentication_headers(bot)
                if got:
                    headers = dict(got[0] or {})
        return bot, dims, state, headers

    bot, dims, state, headers = attributes()
    call(server, "/swarming/api/v1/bot/handshake",
         {"dimensions": dims, "state": state, "version": "fake"}, headers)
    log("handshake done")
    while not QUIT.is_set():
        bot, dims, state, headers = attributes()
        if QUIT.is_set():
            break  # as the real bot: no poll, so no new task, once told to quit
        cmd = call(server, "/swarming/api/v1/bot/poll",
                   {"dimensions": dims, "state": state, "version": "fake"}, headers)
        kind = cmd.get("cmd")
        if kind == "sleep":
            QUIT.wait(float(cmd.get("duration", 1)))
        elif kind == "bot_restart":
            restart()
        elif kind == "update":
            update(server, cmd["version"])
        elif kind == "host_reboot":
            host_reboot()
        elif kind == "crash":
            log("crashing with %d as told" % cmd.get("code", 1))
            os._exit(int(cmd.get("code", 1)))
        elif kind == "ignore_sigterm":
            log("ignoring SIGTERM from now on")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif kind == "orphan":
            orphan()
        elif kind == "run":
            log("running a task for %ss" % cmd.get("duration", 1))
            if hooks and hasattr(hooks, "on_before_task"):
                hooks.on_before_task(bot, None)
            code = run_task(cmd)
            if hooks and hasattr(hooks, "on_after_task"):
                hooks.on_after_task(bot, code != 0, False, dims, {})
            # Headers of now: the task may have run longer than the token it began with.
            bot, dims, state, headers = attributes()
            call(server, "/swarming/api/v1/bot/task_update",
                 {"id": bot.id, "exit_code": code, "duration": cmd.get("duration", 1)},
                 headers)
            log("task done: exit code %d, reported" % code)
        else:
            log("unknown command %r" % (cmd,))
            QUIT.wait(1)
    log("SIGTERM: shutting down")
    if hooks and hasattr(hooks, "on_bot_shutdown"):
        hooks.on_bot_shutdown(Bot(server, {}, {}))
    try:
        call(server, "/swarming/api/v1/bot/event",
             {"event": "bot_shutdown", "message": "SIGTERM"}, {})
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
