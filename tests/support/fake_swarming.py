#!/usr/bin/env python3
"""A stand-in Swarming server (and OAuth token endpoint) for tests and a local lab.

    python3 tests/support/fake_swarming.py --port 0 [--bot-zip PATH] [--hook-script PATH]
        [--pad-bytes N]

prints `PORT <n>` once it listens on 127.0.0.1. Without --bot-zip it builds the stand-in
bot (tests/support/fake_bot) with config/config.json pointing at itself, and injects the
hook script as config/bot_config.py when given one, as the real server does.
--pad-bytes adds an entry `padding.bin` of N random bytes, stored uncompressed, so the
zip is N bytes larger than the bot (a zip that cannot fit a small volume).

Routes:
  GET  /token                       needs the --token-header; {access_token, expires_in}
  GET  /bot_code                    needs `Authorization: Bearer <token>` and
                                    X-Luci-Swarming-Bot-ID; 302 to the versioned URL
  GET  /swarming/api/v1/bot/bot_code/<digest>   the zip (no authorization needed)
  GET  /swarming/api/v1/bot/server_ping
  POST /swarming/api/v1/bot/{handshake,poll,event,task_update[/<id>]}
  POST /_control  JSON, any of:
         {"token_faults": [...], "download_faults": [...],
          "bot_cmds": [{"cmd": "bot_restart"|"host_reboot"|"crash"|"orphan"|"run"|...}, ...],
          "bot_cmds_for": {"<bot id>": [...]},   commands for that bot alone
          "poll_sleep": seconds, "token_expires_in": seconds}
         ("run" is a task: {"cmd": "run", "duration": seconds, "ignore_sigterm": bool};
         the bot runs it in a process group of its own between its on_before_task and
         on_after_task hooks, as the real bot does, and reports it at task_update.)
         Each fault fails one request, in order. Token faults: "500", "drop", "badjson",
         "expired" (expires_in 0), "stall" (never answers), "dribble" (a good answer,
         one byte a second). Download faults: "500", "drop", "403" (at /bot_code),
         "500-versioned", "truncated", "html", "stall", "dribble", "no-main",
         "traversal" (at the versioned URL; "stall" sends half the zip, then nothing
         for a minute; "dribble" sends all of it, 256 bytes every 0.1 s; "no-main" is
         the zip without __main__.py, "traversal" the zip with an entry named
         "../../x", both whole zips with good CRCs). "drop" closes the
         connection without an answer (what a refused or reset connection looks like).
  GET  /_state    what was asked and sent: counts, headers, last dimensions and state,
                  and every `quarantined` the bot's state carried (quarantined_seen);
                  `bots`: by bot id (dimensions["id"]), its handshakes, polls, last
                  dimensions and last state, for several bots on one host;
                  `task_results`: every task_update body (`id`: the bot's id, and
                  `exit_code`), with `at_unix`, when it came; a task_update without a
                  token that is still valid is refused (401, `task_updates_refused`).
Standard library only.
"""

import argparse
import hashlib
import io
import json
import os
import secrets
import socket
import ssl
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_BOT = os.path.join(HERE, "fake_bot")
# How long a "stall" fault holds a connection without answering.
STALL_SECONDS = 120


def build_bot_zip(server_url, hook_script=None):
    """The stand-in bot as a zip application, with its server and optional hooks."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, dirs, files in os.walk(FAKE_BOT):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".pyc"):
                    continue
                path = os.path.join(root, name)
                z.write(path, os.path.relpath(path, FAKE_BOT))
        z.writestr("config/config.json", json.dumps({"server": server_url}))
        if hook_script:
            with open(hook_script, "rb") as f:
                z.writestr("config/bot_config.py", f.read())
    return buf.getvalue()


def rewrite_zip(data, drop=(), extra=()):
    """`data`'s entries but those named in `drop`, then the (name, bytes) of `extra`."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename not in drop:
                z.writestr(info, src.read(info))
        for name, content in extra:
            # A ZipInfo of our own: zipfile keeps its name as given, `..` and all.
            z.writestr(zipfile.ZipInfo(name), content)
    return buf.getvalue()


class State:
    def __init__(self, zip_bytes, token_header):
        self.lock = threading.Lock()
        self.zip = zip_bytes
        self.digest = hashlib.sha256(zip_bytes).hexdigest() if zip_bytes else ""
        self.token = "ya29.fake-" + secrets.token_hex(16)
        self.token_header = token_header
        self.faults = {"token": [], "download": []}
        self.bot_cmds = []
        self.bot_cmds_for = {}
        # A fault chosen at /bot_code that the versioned URL then serves.
        self.pending_versioned_fault = None
        self.poll_sleep = 0.3
        # The lifetime of the tokens handed out, and when the last one handed out ends:
        # a task's result is accepted only with a token still valid then, as the real
        # server accepts no expired token (a bot that drains for an hour needs a fresh one).
        self.token_expires_in = 3600
        self.token_valid_until = 0.0
        self.rec = {
            "token_requests": 0,
            "token_rejected": 0,
            "bot_code_requests": [],
            "versioned_requests": [],
            "handshakes": 0,
            "polls": 0,
            "events": [],
            "task_updates": 0,
            "task_results": [],
            # task_update requests refused for a missing, wrong or expired token.
            "task_updates_refused": 0,
            "last_dimensions": None,
            "last_state": None,
            # Every `quarantined` a handshake or poll carried, with that request's number,
            # so a reason reported only once can be counted.
            "quarantined_seen": [],
            "bot_authorization": None,
            "bots": {},
        }

    def take_fault(self, which):
        """Consumes the next injected fault of `which` ('token' or 'download'), or None."""
        with self.lock:
            queue = self.faults[which]
            return queue.pop(0) if queue else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeSwarming/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_swarming: %s\n" % (fmt % args))

    @property
    def st(self):
        return self.server.state

    def reply(self, code, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stall(self):
        """Accepts the request and never answers: what a wedged metadata server does.
        Ends when the client goes away, or after STALL_SECONDS."""
        self.close_connection = True
        self.connection.settimeout(STALL_SECONDS)
        try:
            self.connection.recv(1)
        except OSError:
            pass

    def dribble_answer(self, body):
        """A complete, valid answer sent one byte a second: each byte in time, the whole
        far too late. Stops when the client goes away."""
        data = json.dumps(body).encode()
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % len(data)).encode()
        self.close_connection = True
        try:
            for i in range(len(head + data)):
                self.wfile.write((head + data)[i:i + 1])
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass

    def body_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def do_GET(self):
        path = self.path.split("?")[0]
        st = self.st
        if path == "/token":
            with st.lock:
                st.rec["token_requests"] += 1
            name, _, value = st.token_header.partition(":")
            if self.headers.get(name.strip()) != value.strip():
                with st.lock:
                    st.rec["token_rejected"] += 1
                return self.reply(403, {"error": "missing %s header" % name})
            mode = st.take_fault("token")
            if mode == "drop":
                return self.drop()
            if mode == "500":
                return self.reply(500, "internal error\n", "text/plain")
            if mode == "badjson":
                return self.reply(200, "<html>not json</html>", "text/html")
            if mode == "stall":
                return self.stall()
            if mode == "dribble":
                return self.dribble_answer({"access_token": st.token, "expires_in": 3600,
                                     "token_type": "Bearer"})
            expires = 0 if mode == "expired" else st.token_expires_in
            with st.lock:
                st.token_valid_until = max(st.token_valid_until, time.time() + expires)
            return self.reply(200, {"access_token": st.token, "expires_in": expires,
                                    "token_type": "Bearer"})
        if path == "/bot_code":
            rec = {
                "authorization_ok": self.headers.get("Authorization") == "Bearer " + st.token,
                "authorization_present": self.headers.get("Authorization") is not None,
                "bot_id": self.headers.get("X-Luci-Swarming-Bot-ID"),
            }
            with st.lock:
                st.rec["bot_code_requests"].append(rec)
            if not rec["authorization_ok"] or not rec["bot_id"]:
                return self.reply(403, "forbidden\n", "text/plain")
            mode = st.take_fault("download")
            if mode == "drop":
                return self.drop()
            if mode == "500":
                return self.reply(500, "internal error\n", "text/plain")
            if mode == "403":
                return self.reply(403, "forbidden\n", "text/plain")
            if mode is not None:
                with st.lock:
                    st.pending_versioned_fault = mode
            return self.reply(302, "", "text/plain",
                              [("Location", "/swarming/api/v1/bot/bot_code/" + st.digest)])
        if path.startswith("/swarming/api/v1/bot/bot_code/"):
            with st.lock:
                st.rec["versioned_requests"].append(
                    {"authorization_present": self.headers.get("Authorization") is not None})
                mode = st.pending_versioned_fault
                st.pending_versioned_fault = None
            if path.rsplit("/", 1)[1] != st.digest:
                return self.reply(404, "no such version\n", "text/plain")
            if mode == "500-versioned":
                return self.reply(500, "internal error\n", "text/plain")
            if mode == "html":
                return self.reply(200, "<html><body>Bad Gateway</body></html>", "text/html")
            if mode == "stall":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(st.zip)))
                self.end_headers()
                self.wfile.write(st.zip[: len(st.zip) // 2])
                self.wfile.flush()
                time.sleep(60)
                return self.drop()
            if mode == "dribble":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(st.zip)))
                self.end_headers()
                for at in range(0, len(st.zip), 256):
                    self.wfile.write(st.zip[at:at + 256])
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            if mode == "no-main":
                return self.reply(200, rewrite_zip(st.zip, drop=("__main__.py",)),
                                  "application/octet-stream")
            if mode == "traversal":
                return self.reply(200, rewrite_zip(st.zip, extra=(("../../x", b"x\n"),)),
                                  "application/octet-stream")
            if mode == "truncated":
                return self.reply(200, st.zip[: len(st.zip) // 2], "application/octet-stream")
            return self.reply(200, st.zip, "application/octet-stream")
        if path == "/swarming/api/v1/bot/server_ping":
            return self.reply(200, "Server up", "text/plain")
        if path == "/_state":
            with st.lock:
                out = dict(st.rec)
                out["token"] = st.token
                out["digest"] = st.digest
            return self.reply(200, out)
        return self.reply(404, "no route %s\n" % path, "text/plain")

    do_HEAD = do_GET

    def do_POST(self):
        path = self.path.split("?")[0]
        st = self.st
        body = self.body_json()
        if body is None:
            return self.reply(400, {"error": "body is not JSON"})
        if path == "/_control":
            with st.lock:
                st.faults["token"].extend(body.get("token_faults", []))
                st.faults["download"].extend(body.get("download_faults", []))
                if "poll_sleep" in body:
                    st.poll_sleep = body["poll_sleep"]
                if "token_expires_in" in body:
                    st.token_expires_in = body["token_expires_in"]
                st.bot_cmds.extend(body.get("bot_cmds", []))
                for bot_id, cmds in body.get("bot_cmds_for", {}).items():
                    st.bot_cmds_for.setdefault(bot_id, []).extend(cmds)
            return self.reply(200, {"ok": True})
        bot_paths = ("/swarming/api/v1/bot/handshake", "/swarming/api/v1/bot/poll")
        if path in bot_paths:
            with st.lock:
                st.rec["last_dimensions"] = body.get("dimensions")
                st.rec["last_state"] = body.get("state")
                st.rec["bot_authorization"] = self.headers.get("Authorization")
                ids = (body.get("dimensions") or {}).get("id") or ["?"]
                bot_id = ids[0]
                per = st.rec["bots"].setdefault(
                    bot_id, {"handshakes": 0, "polls": 0, "last_dimensions": None, "last_state": None})
                per["last_dimensions"] = body.get("dimensions")
                per["last_state"] = body.get("state")
                per["handshakes" if path.endswith("handshake") else "polls"] += 1
                quarantined = (body.get("state") or {}).get("quarantined")
                if quarantined:
                    st.rec["quarantined_seen"].append({
                        "request": st.rec["handshakes"] + st.rec["polls"] + 1,
                        "quarantined": quarantined,
                    })
                if path.endswith("handshake"):
                    st.rec["handshakes"] += 1
                    return self.reply(200, {
                        "session": "s1", "bot_version": "fake", "server_version": "fake",
                        "bot_group_cfg": {"dimensions": {"pool": ["default"]}},
                    })
                st.rec["polls"] += 1
                own = st.bot_cmds_for.get(bot_id)
                if own:
                    cmd = own.pop(0)
                elif st.bot_cmds:
                    cmd = st.bot_cmds.pop(0)
                else:
                    cmd = {"cmd": "sleep", "duration": st.poll_sleep}
            return self.reply(200, cmd)
        if path == "/swarming/api/v1/bot/event":
            with st.lock:
                st.rec["events"].append(body.get("event"))
            return self.reply(200, {})
        if path.startswith("/swarming/api/v1/bot/task_update"):
            with st.lock:
                fresh = (self.headers.get("Authorization") == "Bearer " + st.token
                         and time.time() < st.token_valid_until)
                if not fresh:
                    st.rec["task_updates_refused"] += 1
            if not fresh:
                return self.reply(401, {"error": "missing, wrong or expired token"})
            with st.lock:
                st.rec["task_updates"] += 1
                st.rec["task_results"].append(dict(body, at_unix=time.time()))
            return self.reply(200, {"ok": True, "must_stop": False})
        return self.reply(404, {"error": "no route %s" % path})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bot-zip", help="serve this zip instead of building the stand-in bot")
    p.add_argument("--hook-script", help="inject this file as config/bot_config.py")
    p.add_argument("--token-header", default="Metadata-Flavor: Google",
                   help="the header the token endpoint requires, NAME: VALUE")
    p.add_argument("--pad-bytes", type=int, default=0,
                   help="add a stored entry of this many random bytes to the zip")
    p.add_argument("--write-zip", metavar="PATH",
                   help="also write the served zip to PATH")
    p.add_argument("--tls", nargs=2, metavar=("CHAIN", "KEY"),
                   help="also serve the same routes over HTTPS with this PEM certificate "
                        "chain and key, on a second port printed as TLSPORT")
    args = p.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    if args.bot_zip:
        with open(args.bot_zip, "rb") as f:
            zip_bytes = f.read()
    else:
        zip_bytes = build_bot_zip("http://127.0.0.1:%d" % port, args.hook_script)
    if args.pad_bytes:
        zip_bytes = rewrite_zip(zip_bytes, extra=(("padding.bin", os.urandom(args.pad_bytes)),))
    if args.write_zip:
        with open(args.write_zip, "wb") as f:
            f.write(zip_bytes)
    server.state = State(zip_bytes, args.token_header)
    print("PORT %d" % port, flush=True)
    if args.tls:
        tls = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
        # The handshake runs in each request's thread, so a client that fails it
        # (an untrusted certificate) does not stall the accept loop.
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True,
                                     do_handshake_on_connect=False)
        tls.state = server.state
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        print("TLSPORT %d" % tls.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
