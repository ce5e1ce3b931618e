#!/usr/bin/env python3
"""A stand-in Kubernetes API server: one Node and the core/v1 Events of one namespace,
over HTTPS with a CA it makes, demanding a bearer token as the real one does.

    python3 tests/support/fake_kube.py --dir DIR --node NAME [--namespace NS]

makes a CA and a server certificate for 127.0.0.1 with the `openssl` CLI, writes the
service account's files as a kubelet mounts them (DIR/ca.crt, DIR/token, DIR/namespace),
and prints `PORT <https port>` then `CONTROL <http port>`, both on 127.0.0.1.

API (HTTPS; every request needs `Authorization: Bearer <the current token>`, else 401
with a Status, as an expired projected token gets):
  GET   /api/v1/nodes/<node>                          the Node (404 for another name)
  GET   /api/v1/nodes?fieldSelector=metadata.name%3D<node>&watch=true&resourceVersion=RV
        [&timeoutSeconds=S][&allowWatchBookmarks=true]
        a chunked stream, one JSON event per line: without RV an ADDED of the node, then
        a MODIFIED per change after RV; an RV older than the last compaction answers
        an ERROR event with a 410 Status, as the real server does; ends after S.
  POST  /api/v1/namespaces/<ns>/events                Content-Type application/json;
        the Event must name the Node (kind, name, uid), carry reason, message, type,
        count, timestamps and a unique metadata.name (409 if it exists).
  PATCH /api/v1/namespaces/<ns>/events/<name>         Content-Type
        application/strategic-merge-patch+json (or merge-patch); 404 if absent.
Control (plain HTTP):
  POST /_control  JSON, any of:
        {"annotate": {"key": "value" | null}}   sets or removes node annotations
        {"forbid": ["get nodes", "watch nodes", "create events", "patch events"]}
                          403 with the RBAC message for these (replaces the list)
        {"rotate_token": true}   writes a new token; the old one answers 401 from now
        {"down": true|false}     drop every connection without an answer (and end
                                 the open watches), as an unreachable server
        {"stall": true|false}    accept, then never answer
        {"end_watches": true}    end every open watch normally
        {"compact": true}        versions up to now are too old to watch from (410)
  GET  /_state    {"events": [...], "requests": [[method, path, status], ...],
                   "watches_opened": n, "node": {...}}
Standard library only (and the openssl command).
"""

import argparse
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
STATE = {
    "token": "",
    "forbid": [],
    "down": False,
    "stall": False,
    "rv": 100,
    "compacted": 0,
    "history": [],  # (rv, node copy) per change
    "end_generation": 0,
    "events": {},  # name -> event
    "requests": [],
    "watches_opened": 0,
}
ARGS = None


def make_pki(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it; the CA is written where
    a kubelet mounts it."""
    pki = os.path.join(directory, ".pki")
    os.makedirs(pki, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=pki)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=fake-kube-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=kubernetes")
    with open(os.path.join(pki, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    with open(os.path.join(pki, "ca.crt")) as src, \
            open(os.path.join(directory, "ca.crt"), "w") as dst:
        dst.write(src.read())
    return os.path.join(pki, "server.crt"), os.path.join(pki, "server.key")


def write_token():
    STATE["token"] = secrets.token_urlsafe(24)
    path = os.path.join(ARGS.dir, "token")
    # Atomically, as the kubelet swaps a projected token.
    with open(path + ".tmp", "w") as f:
        f.write(STATE["token"])
    os.replace(path + ".tmp", path)


def node_object():
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": ARGS.node,
            "uid": NODE_UID,
            "resourceVersion": str(STATE["rv"]),
            "annotations": dict(ANNOTATIONS),
        },
    }


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def forbidden_message(verb, resource, name=None):
    who = f'User "system:serviceaccount:{ARGS.namespace}:test-machine-monitor"'
    if resource == "nodes":
        what = f'nodes "{name}"' if name else "nodes"
        return (f'{what} is forbidden: {who} cannot {verb} resource "nodes" in API group "" '
                "at the cluster scope")
    return (f'events is forbidden: {who} cannot {verb} resource "events" in API group "" '
            f'in the namespace "{ARGS.namespace}"')


NODE_UID = "6a1d3c0e-0000-4000-8000-" + secrets.token_hex(6)
ANNOTATIONS = {"node.alpha.kubernetes.io/ttl": "0"}

REQUIRED_EVENT_FIELDS = ["reason", "message", "type", "count", "firstTimestamp",
                         "lastTimestamp", "source", "involvedObject", "metadata"]


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with LOCK:
            STATE["requests"].append([self.command, self.path, code])

    def gate(self):
        """Down, stall and the token: True when the request may go on."""
        with LOCK:
            down, stall, token = STATE["down"], STATE["stall"], STATE["token"]
        if down:
            self.close_connection = True
            self.connection.close()
            return False
        if stall:
            time.sleep(3600)
            return False
        if self.headers.get("Authorization") != f"Bearer {token}":
            self.reply(401, status(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def forbidden(self, verb, resource, name=None):
        with LOCK:
            refused = f"{verb} {resource}" in STATE["forbid"]
        if refused:
            self.reply(403, status(403, "Forbidden", forbidden_message(verb, resource, name)))
        return refused

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if not self.gate():
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == f"/api/v1/nodes/{ARGS.node}":
            if self.forbidden("get", "nodes", ARGS.node):
                return
            with LOCK:
                node = node_object()
            self.reply(200, node)
        elif url.path.startswith("/api/v1/nodes/"):
            name = url.path.rsplit("/", 1)[1]
            self.reply(404, status(404, "NotFound", f'nodes "{name}" not found'))
        elif url.path == "/api/v1/nodes" and query.get("watch") == ["true"]:
            if self.forbidden("watch", "nodes"):
                return
            if query.get("fieldSelector") != [f"metadata.name={ARGS.node}"]:
                self.reply(400, status(400, "BadRequest", "the stand-in watches one node by "
                                       "fieldSelector=metadata.name=<node>"))
                return
            self.watch(query)
        else:
            self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))

    def chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def watch(self, query):
        rv = query.get("resourceVersion", [""])[0]
        timeout = float(query.get("timeoutSeconds", ["1800"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with LOCK:
            STATE["watches_opened"] += 1
            STATE["requests"].append([self.command, self.path, 200])
            generation = STATE["end_generation"]
            if rv and int(rv) < STATE["compacted"]:
                gone = status(410, "Expired", f"too old resource version: {rv} ({STATE['compacted']})")
                pending = [{"type": "ERROR", "object": gone}]
                seen = None
            elif rv:
                seen = int(rv)
                pending = []
            else:
                seen = STATE["rv"]
                pending = [{"type": "ADDED", "object": node_object()}]
        deadline = time.monotonic() + timeout
        try:
            for event in pending:
                self.chunk(event)
            while seen is not None:
                with LOCK:
                    LOCK.wait_for(lambda: STATE["end_generation"] != generation or STATE["down"]
                                  or any(v > seen for v, _ in STATE["history"])
                                  or time.monotonic() >= deadline,
                                  timeout=max(0.0, deadline - time.monotonic()))
                    if STATE["down"]:
                        self.close_connection = True
                        self.connection.close()
                        return
                    if STATE["end_generation"] != generation or time.monotonic() >= deadline:
                        break
                    changes = [(v, n) for v, n in STATE["history"] if v > seen]
                for v, node in changes:
                    self.chunk({"type": "MODIFIED", "object": node})
                    seen = v
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.close_connection = True

    def events_path(self):
        prefix = f"/api/v1/namespaces/{ARGS.namespace}/events"
        path = urllib.parse.urlsplit(self.path).path
        if path == prefix:
            return ""
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1:]
        return None

    def do_POST(self):
        if not self.gate():
            return
        if self.events_path() != "":
            self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        if self.forbidden("create", "events"):
            return
        if self.headers.get("Content-Type") != "application/json":
            self.reply(415, status(415, "UnsupportedMediaType", "expected application/json"))
            return
        try:
            event = json.loads(self.body())
        except ValueError as e:
            self.reply(400, status(400, "BadRequest", f"not JSON: {e}"))
            return
        missing = [f for f in REQUIRED_EVENT_FIELDS if f not in event]
        involved = event.get("involvedObject", {})
        if missing or involved.get("kind") != "Node" or involved.get("name") != ARGS.node \
                or involved.get("uid") != NODE_UID or not event.get("metadata", {}).get("name"):
            self.reply(422, status(422, "Invalid", f"bad event (missing {missing}, "
                                   f"involvedObject {involved})"))
            return
        name = event["metadata"]["name"]
        with LOCK:
            if name in STATE["events"]:
                self.reply(409, status(409, "AlreadyExists", f'events "{name}" already exists'))
                return
            event["metadata"]["namespace"] = ARGS.namespace
            STATE["events"][name] = event
        self.reply(201, event)

    def do_PATCH(self):
        if not self.gate():
            return
        name = self.events_path()
        if not name:
            self.reply(405, status(405, "MethodNotAllowed", "the stand-in patches events only"))
            return
        if self.forbidden("patch", "events"):
            return
        if self.headers.get("Content-Type") not in ("application/strategic-merge-patch+json",
                                                    "application/merge-patch+json"):
            self.reply(415, status(415, "UnsupportedMediaType",
                                   "expected a merge patch content type"))
            return
        patch = json.loads(self.body())
        with LOCK:
            event = STATE["events"].get(name)
            if event is None:
                self.reply(404, status(404, "NotFound", f'events "{name}" not found'))
                return
            event.update(patch)
        self.reply(200, event)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that refuses our certificate, or hangs up mid-answer, as tests do.
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, OSError)):
            super().handle_error(request, client_address)


class Control(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            self.send({"events": list(STATE["events"].values()), "requests": STATE["requests"],
                       "watches_opened": STATE["watches_opened"], "node": node_object()})

    def do_POST(self):
        ask = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with LOCK:
            for key, value in ask.get("annotate", {}).items():
                if value is None:
                    ANNOTATIONS.pop(key, None)
                else:
                    ANNOTATIONS[key] = value
            if "annotate" in ask:
                STATE["rv"] += 1
                STATE["history"].append((STATE["rv"], node_object()))
            if "forbid" in ask:
                STATE["forbid"] = list(ask["forbid"])
            if ask.get("rotate_token"):
                write_token()
            for flag in ("down", "stall"):
                if flag in ask:
                    STATE[flag] = bool(ask[flag])
            if ask.get("end_watches"):
                STATE["end_generation"] += 1
            if ask.get("compact"):
                STATE["rv"] += 1
                STATE["compacted"] = STATE["rv"]
            LOCK.notify_all()
        self.send({"ok": True})


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--namespace", default="lab")
    ARGS = p.parse_args()
    os.makedirs(ARGS.dir, exist_ok=True)
    cert, key = make_pki(ARGS.dir)
    with open(os.path.join(ARGS.dir, "namespace"), "w") as f:
        f.write(ARGS.namespace)
    write_token()
    api = QuietServer(("127.0.0.1", 0), Api)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    api.socket = context.wrap_socket(api.socket, server_side=True)
    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    control.daemon_threads = True
    threading.Thread(target=api.serve_forever, daemon=True).start()
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"PORT {api.server_address[1]}", flush=True)
    print(f"CONTROL {control.server_address[1]}", flush=True)
    # Until the test kills us, or its end of our stdin closes.
    sys.stdin.read()


if __name__ == "__main__":
    main()
