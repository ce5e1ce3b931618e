"""What the Python tools of ci/ and tests/support/ share: free ports, waits with a
deadline, the adb host protocol, one-shot HTTP, stopping a child.

Scripts are run as `python3 path/script` with no installation step, so each one puts
this folder on sys.path itself. Standard library only.
"""
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class GaveUp(RuntimeError):
    """A wait ran out of time, or the process it depended on exited first."""


def free_port():
    """A loopback port nothing listens on at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_deps():
    """Every ci/ script installs what it needs first."""
    subprocess.run([os.path.join(ROOT, "ci", "deps")], check=True)


def bench_binary(path, script):
    """`path` when given (it must exist), else the shipped kind of binary for this
    machine, built now: the x86_64 musl release build, made by `ci/build` the way the
    image's armv7 one is (static, the same profile and link order). Its memory is what a
    Pi's pod holds; glibc's shared libraries and per-thread arenas are not."""
    if path is None:
        out = subprocess.run([os.path.join(ROOT, "ci", "build"), "x86_64-unknown-linux-musl"], cwd=ROOT,
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        _, built, _ = out.split()
        return os.path.join(ROOT, built)
    if not os.path.exists(path):
        sys.exit(f"{script}: no binary at {path}")
    return path


def wait_for(what, f, limit, every=0.1, proc=None):
    """f()'s first true value, polled every `every` seconds. An OSError from f counts as
    "not yet" (a server still starting). GaveUp, naming `what`, after `limit` seconds or
    as soon as `proc` has exited."""
    deadline = time.monotonic() + limit
    while True:
        try:
            got = f()
        except OSError:
            got = None
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            name = os.path.basename(str(proc.args[0] if isinstance(proc.args, list) else proc.args))
            raise GaveUp(f"{name} exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise GaveUp(f"gave up after {limit:g}s waiting for {what}")
        time.sleep(every)


def wait_listening(port, what, limit):
    """Returns once something accepts connections on the loopback `port`."""
    def accepts():
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    wait_for(what, accepts, limit)


def read_line(stream, what, limit):
    """stream.readline(); GaveUp at the end of the stream or after `limit` seconds: a
    child that never prints its line must fail the run, not hang it. A reader thread
    because select() on the file descriptor misses lines the stream has already buffered."""
    got = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(limit)
    if not got:
        raise GaveUp(f"gave up after {limit:g}s waiting for {what}")
    if not got[0]:
        raise GaveUp(f"the output ended before {what}")
    return got[0]


def adb_request(port, request, timeout=10.0):
    """One adb host-protocol request (what `adb connect`, `adb devices` send) and the
    reply until the server closes; a reply cut off by the timeout is returned as far as
    it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"%04x%s" % (len(request), request.encode()))
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
    return out.decode("utf-8", "replace")


def http_get_raw(port, path, timeout):
    """The whole answer (status line, headers, body) to a GET on a fresh HTTP/1.0
    connection: no client library between the measurement and the server."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        chunks = []
        while chunk := s.recv(262144):
            chunks.append(chunk)
    return b"".join(chunks)


def http_status(url, timeout=5):
    """The status code `url` answers with, errors included; OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def stop(proc, grace):
    """SIGTERM, then SIGKILL after `grace` seconds; True when it took the SIGKILL."""
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(grace)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


if __name__ == "__main__":
    # For the shell scripts of ci/.
    print(free_port())
