#!/usr/bin/env python3
"""Simulated Android phones that speak the adb DEVICE transport protocol over TCP.

The real adb server adds each one with `host:connect:127.0.0.1:<port>` (`adb connect`)
and then talks to it exactly as to a phone on USB: 24-byte little-endian message
headers (command, arg0, arg1, data_length, data_check, magic), CNXN/AUTH handshake,
OPEN/OKAY/WRTE/CLSE streams, shell v2 packets with exit codes, shell v1 with CRLF.

Usage (prints `PORT <port> <name>` per phone, then `CONTROL <port>`, then serves until
killed):

    adb_sim.py --profile modern --serial-name X [--port 0]
    adb_sim.py --phone modern:A --phone hot:B:5600 ... [--control-port 0]

Profiles: modern, android6 (no shell_v2, CRLF, no thermalservice), hot (44.5 C and 12 %),
unauthorized (never completes AUTH), offline (accepts and never answers), reboots (a
modern phone; every phone reboots on `reboot:`), hangs (`dumpsys thermalservice` never
answers).

Every shell service runs in a real `mksh` (Debian's build of the shell Android ships as
`/system/bin/sh`) whose PATH holds only toybox's applets, as a phone's does; the phone's
own commands (getprop, dumpsys, df /data, cat /proc/uptime) are shell functions over the
simulator's state, and `/sys/class/thermal` is a directory of the simulator's whose zones
follow the phone's temperature. Output is streamed as it comes. A shell v2 stream with no
command (`shell,v2,raw:`) is a shell that reads its commands from the stream's stdin
packets, as adbd's is; it is given the phone's commands again, as they are then, before
each packet's text.

Control port, one command per line, answered `OK` or `ERR <why>`:
    set <name> battery <percent> | set <name> temp <celsius> | set <name> booting 0|1
    set <name> powered 0|1 | set <name> battery_health <code> | set <name> data_free_mb <n>
    set <name> battery_dump indented|flush|nolevel   the layout of `dumpsys battery`
                    (flush: the block at column 0, as some dumps have it; nolevel: no
                    `level:` line at all)
    prop <name> <key> [<value>]   set a getprop value, or remove it without a value
    unplug <name>   close the phone's connections and refuse new ones
    replug <name>   listen again (same port)
    wedge <name>    a wedged adbd: the connection stays (the server keeps listing the
                    phone as `device`) but nothing is answered: no new stream, and
                    nothing written to one already open
    unwedge <name>  answer again
    reboots <name>  how many times the phone was rebooted (answers `OK <n>`)
    last-shell <name>  the last shell command line, or stdin text of a shell with no
                    command, the phone was sent (`OK <JSON string>`)
    flood <name> <bytes>   `getprop` prints that many bytes of property lines (0: normal)
    v2 <name> badid|overlong|truncated|ok   every shell v2 stream of the phone answers
                    one malformed packet, as a broken adbd would, and closes: an id
                    outside 0..=5, a length beyond the data, or a header cut short

Installed packages: modern phones have Google Play services and the Play Store
(`dumpsys package <name>` prints their `versionName=`), android6 phones neither.

Standard library only.
"""

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
VERSION = 0x01000001
MAX_DATA = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3

PROFILES = ("modern", "android6", "hot", "unauthorized", "offline", "reboots", "hangs", "nocase")

# What the `nocase` profile's shell says of a command that uses `case`.
NOCASE_ERROR = "/system/bin/sh: syntax error: 'case' unexpected"


class Host:
    """What every phone of this simulator shares: mksh, a PATH of toybox applet links (a
    phone's PATH has toybox, not GNU tools), and a work directory for the phones' own
    `/sys`, named by this process's pid so that the next run sweeps what a killed one left."""

    def __init__(self):
        self.mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
        if not self.mksh or not toybox:
            raise SystemExit("adb_sim.py needs mksh and toybox (Debian packages mksh and toybox; ci/deps)")
        tmp = tempfile.gettempdir()
        for name in os.listdir(tmp):
            pid = name.removeprefix("adb_sim.")
            if name.startswith("adb_sim.") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        self.root = os.path.join(tmp, f"adb_sim.{os.getpid()}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.bin = os.path.join(self.root, "bin")
        # The shells running now: each in a session of its own (a phone's command must
        # not get the host's signals), so the simulator stops them itself when it stops.
        self.shells = set()
        os.makedirs(self.bin)
        for applet in subprocess.run([toybox], capture_output=True, text=True, check=True).stdout.split():
            os.symlink(toybox, os.path.join(self.bin, applet))

    def sysfs(self, name):
        path = os.path.join(self.root, "sys", name.replace("/", "_"))
        os.makedirs(path, exist_ok=True)
        return path


HOST = None


# What a broken adbd sends on a shell v2 stream instead of its output.
V2_FAULTS = {
    "badid": struct.pack("<BI", 9, 1) + b"x",
    "overlong": struct.pack("<BI", 1, 1000) + b"short",
    "truncated": b"\x01\x05\x00",
}


def message(cmd, arg0, arg1, data=b""):
    check = sum(data) & 0xFFFFFFFF
    return struct.pack("<6I", cmd, arg0, arg1, len(data), check, cmd ^ 0xFFFFFFFF) + data


def v2_packet(packet_id, data):
    return struct.pack("<BI", packet_id, len(data)) + data


class Stream:
    def __init__(self, local, remote):
        self.local = local
        self.remote = remote
        self.acked = asyncio.Event()
        self.closed = False
        # Set when the host closes the stream or the connection ends.
        self.gone = asyncio.Event()
        self.sending = asyncio.Lock()
        # What the host wrote to the stream (shell v2 packets), not yet taken.
        self.inbox = bytearray()
        self.written = asyncio.Event()


class Phone:
    def __init__(self, profile, name, port=0, reboot_secs=3.0, boot_secs=1.0, shutdown_secs=0.05):
        if profile not in PROFILES:
            raise SystemExit(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        self.profile = profile
        self.name = name
        self.port = port
        self.reboot_secs = reboot_secs
        # A real phone keeps answering (boot completed) for seconds after `reboot:`.
        self.shutdown_secs = shutdown_secs
        self.boot_secs = boot_secs
        self.server = None
        self.sysfs = HOST.sysfs(name)
        # The phone's commands, for a shell that reads stdin (`feed`).
        self.functions = os.path.join(HOST.root, f"functions.{name.replace('/', '_')}.sh")
        self.writers = set()
        self.booted_at = time.monotonic() - 1000.0
        self.force_booting = False
        self.reboot_count = 0
        self.last_shell = ""
        self.battery = 12 if profile == "hot" else 85
        self.temp = 44.5 if profile == "hot" else 31.5
        old = profile == "android6"
        self.props = {
            "ro.serialno": name,
            "ro.product.name": "hammerhead" if old else "redfin",
            "ro.product.model": "Nexus 5" if old else "Pixel 5",
            "ro.product.device": "hammerhead" if old else "redfin",
            "ro.product.board": "hammerhead" if old else "redfin",
            "ro.build.product": "hammerhead" if old else "redfin",
            "ro.product.brand": "google",
            "ro.build.id": "MOB31E" if old else "RQ3A.211001.001",
            "ro.build.version.incremental": "2671473" if old else "7641976",
            "ro.build.version.release": "6.0.1" if old else "11",
            "ro.build.version.sdk": "23" if old else "30",
            "ro.build.type": "user",
            "ro.product.cpu.abi": "armeabi-v7a" if old else "arm64-v8a",
            "persist.sys.boot.reason.history": "reboot,userrequested,1700000000\nreboot,shell,1699990000",
        }
        self.features = "" if old else "shell_v2,cmd,stat_v2"
        self.battery_dump = "indented"
        self.powered = True
        self.battery_health = 2
        self.data_free_mb = 20000
        self.wedged = False
        self.flood_bytes = 0
        self.v2_fault = "ok"
        self.packages = {} if old else {
            "com.google.android.gms": "24.08.12 (190400-1)",
            "com.android.vending": "39.9.20-21 [0] [PR] 612345678",
        }

    # --- state -------------------------------------------------------------------
    def all_props(self):
        props = dict(self.props)
        if self.boot_completed():
            props["sys.boot_completed"] = "1"
        return props

    def sysfs_zones(self):
        """Writes the phone's thermal zones under its own `/sys/class/thermal`."""
        for i, (kind, temp) in enumerate((("tsens_tz_sensor0", self.temp), ("pm8841_tz", self.temp - 3))):
            zone = os.path.join(self.sysfs, f"thermal_zone{i}")
            os.makedirs(zone, exist_ok=True)
            with open(os.path.join(zone, "type"), "w") as f:
                f.write(kind + "\n")
            with open(os.path.join(zone, "temp"), "w") as f:
                f.write(f"{int(temp * 1000)}\n")

    def boot_completed(self):
        return not self.force_booting and time.monotonic() - self.booted_at >= self.boot_secs

    def banner(self):
        p = self.props
        return (
            f"device::ro.product.name={p['ro.product.name']};ro.product.model={p['ro.product.model']};"
            f"ro.product.device={p.get('ro.product.device', '')};features={self.features}"
        ).encode()

    def run(self, cmd):
        """Returns (output, exit code) of a shell command, or None to hang."""
        cmd = cmd.strip()
        if self.profile == "hangs" and cmd == "dumpsys thermalservice":
            return None
        if cmd == "getprop" or cmd.startswith("getprop "):
            props = self.all_props()
            if cmd != "getprop":
                return props.get(cmd.split()[1], "") + "\n", 0
            return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())), 0
        if cmd == "dumpsys battery":
            level = "" if self.battery_dump == "nolevel" else f"  level: {self.battery}\n"
            usb = "true" if self.powered else "false"
            text = (
                f"  AC powered: false\n  USB powered: {usb}\n"
                "  Wireless powered: false\n  Max charging current: 500000\n  status: 2\n"
                f"  health: {self.battery_health}\n  present: true\n{level}  scale: 100\n"
                f"  voltage: 4123\n  temperature: {int(round(self.temp * 10))}\n"
                "  technology: Li-ion\n"
            )
            if self.battery_dump == "flush":
                text = "".join(l.strip() + "\n" for l in text.splitlines())
            return "Current Battery Service state:\n" + text + "OEM battery extras:\n  cycle: 42\n  level: 3\n", 0
        if cmd.startswith("dumpsys package "):
            name = cmd.split()[2]
            if name not in self.packages:
                return f"Unable to find package: {name}\n", 0
            return (
                f"Packages:\n  Package [{name}] (5e3c1a2):\n    userId=10123\n"
                f"    pkg=Package{{9f1 {name}}}\n    versionCode=240812044 minSdk=30 targetSdk=34\n"
                f"    versionName={self.packages[name]}\n    splits=[base]\n"
                "    timeStamp=2024-03-01 10:00:00\n"
            ), 0
        if cmd == "dumpsys thermalservice":
            if self.profile == "android6":
                return "Can't find service: thermalservice\n", 0
            return (
                "IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\n"
                "Thermal Status: 0\nCached temperatures:\n"
                "\tTemperature{mValue=99.0, mType=0, mName=cached, mStatus=0}\n"
                "HAL Ready: true\nHAL connection:\n\tThermalHAL 2.0 connected: yes\n"
                "Current temperatures from HAL:\n"
                f"\tTemperature{{mValue={self.temp - 2.5:.6f}, mType=2, mName=battery, mStatus=0}}\n"
                f"\tTemperature{{mValue={self.temp:.6f}, mType=0, mName=cpu0, mStatus=0}}\n"
                "\tTemperature{mValue=8900.0, mType=6, mName=vbat, mStatus=0}\n"
                "\tTemperature{mValue=-99.9, mType=4, mName=usb, mStatus=0}\n"
                "Current cooling devices from HAL:\n"
                "\tCoolingDevice{mValue=0, mType=0, mName=cpu0}\n"
            ), 0
        if cmd == "df /data":
            free = self.data_free_mb * 1024
            total = max(free, 50_000_000)
            return (
                "Filesystem      1K-blocks    Used Available Use% Mounted on\n"
                f"/dev/block/dm-8 {total} {total - free} {free} {100 * (total - free) // total}% /data\n"
            ), 0
        if cmd == "cat /proc/uptime":
            up = time.monotonic() - self.booted_at
            return f"{up:.2f} {up * 3.7:.2f}\n", 0
        if cmd.startswith("echo "):
            return cmd[5:] + "\n", 0
        return f"/system/bin/sh: {cmd.split(' ')[0]}: not found\n", 127

    def shell_functions(self):
        """The phone's commands as POSIX shell functions over the current state."""

        def body(cmd):
            result = self.run(cmd)
            if result is None:
                return "sleep 3600"
            out, code = result
            return f"printf '%s' {shlex.quote(out)}; return {code}"

        getprop = f"case $# in 0) {body('getprop')};; *) case \"$1\" in " + "".join(
            f"{shlex.quote(k)}) {body('getprop ' + k)};; " for k in self.all_props()
        ) + "*) echo;; esac;; esac"
        if self.flood_bytes:
            getprop = f"yes '[flood.filler]: [{'x' * 100}]' | head -c {self.flood_bytes}"
        return (
            f"getprop() {{ {getprop}; }}\n"
            "dumpsys() { case \"$1\" in "
            f"battery) {body('dumpsys battery')};; "
            f"thermalservice) {body('dumpsys thermalservice')};; "
            "package) case \"$2\" in "
            + "".join(f"{shlex.quote(n)}) {body('dumpsys package ' + n)};; " for n in self.packages)
            + "*) echo \"Unable to find package: $2\";; esac;; "
            "*) echo \"Can't find service: $1\";; esac; }\n"
            f"df() {{ case \"$1\" in /data) {body('df /data')};; *) command df \"$@\";; esac; }}\n"
            "cat() { case \"$1\" in "
            f"/proc/uptime) {body('cat /proc/uptime')};; "
            "*) command cat \"$@\";; esac; }\n"
        )

    # --- listening ---------------------------------------------------------------
    async def listen(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    def unplug(self):
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    async def reboot(self):
        self.reboot_count += 1
        self.unplug()
        await asyncio.sleep(self.reboot_secs)
        self.booted_at = time.monotonic()
        await self.listen()

    # --- one connection from the adb server -------------------------------------
    async def handle(self, reader, writer):
        self.writers.add(writer)
        try:
            if self.profile == "offline":
                while await reader.read(65536):
                    pass
                return
            await self.converse(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def converse(self, reader, writer):
        streams = {}
        next_id = 1
        maxdata = MAX_DATA
        try:
            while True:
                header = await reader.readexactly(24)
                cmd, arg0, arg1, length, _check, _magic = struct.unpack("<6I", header)
                data = await reader.readexactly(length) if length else b""
                if cmd == A_CNXN:
                    maxdata = min(MAX_DATA, arg1 or MAX_DATA)
                    if self.profile == "unauthorized":
                        writer.write(message(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
                    else:
                        writer.write(message(A_CNXN, VERSION, MAX_DATA, self.banner()))
                elif cmd == A_AUTH:
                    if self.profile == "unauthorized":
                        # Reject every signature; after the public key, wait for a person
                        # who never comes.
                        if arg0 == AUTH_SIGNATURE:
                            writer.write(message(A_AUTH, AUTH_TOKEN, 0, os.urandom(20)))
                    else:
                        writer.write(message(A_CNXN, VERSION, MAX_DATA, self.banner()))
                elif cmd in (A_OPEN, A_WRTE) and self.wedged:
                    # A wedged adbd: the link is up, nothing answers, neither a new
                    # stream nor what is written to one already open.
                    pass
                elif cmd == A_OPEN:
                    stream = Stream(next_id, arg0)
                    next_id += 1
                    streams[stream.local] = stream
                    writer.write(message(A_OKAY, stream.local, stream.remote))
                    service = data.rstrip(b"\0").decode("utf-8", "replace")
                    asyncio.ensure_future(self.serve(writer, stream, service, maxdata, streams))
                elif cmd == A_OKAY:
                    stream = streams.get(arg1)
                    if stream is not None:
                        stream.acked.set()
                elif cmd == A_WRTE:
                    # Stdin from the host (shell v2 packets): handed to the stream's
                    # shell, if it reads stdin, and acknowledged.
                    stream = streams.get(arg1)
                    if stream is not None:
                        stream.inbox += data
                        stream.written.set()
                    writer.write(message(A_OKAY, arg1, arg0))
                elif cmd == A_CLSE:
                    stream = streams.pop(arg1, None)
                    if stream is not None:
                        stream.closed = True
                        stream.acked.set()
                        stream.gone.set()
                await writer.drain()
        finally:
            # The connection ended (unplug, reboot, the server let go): stop every
            # command still running for it.
            for stream in streams.values():
                stream.closed = True
                stream.acked.set()
                stream.gone.set()

    async def send(self, writer, stream, payload, maxdata):
        """WRTE `payload` in acknowledged pieces; False once the host closed the stream."""
        async with stream.sending:
            for i in range(0, len(payload), maxdata):
                stream.acked.clear()
                writer.write(message(A_WRTE, stream.local, stream.remote, payload[i : i + maxdata]))
                await stream.acked.wait()
                if stream.closed:
                    return False
        return True

    async def serve(self, writer, stream, service, maxdata, streams):
        try:
            if service.startswith("reboot:"):
                await asyncio.sleep(self.shutdown_secs)
                asyncio.ensure_future(self.reboot())
                return
            head, _, cmd = service.partition(":")
            args = head.split(",")
            if args[0] != "shell":
                writer.write(message(A_CLSE, stream.local, stream.remote))
                return
            v2 = "v2" in args
            if cmd or not v2:
                self.last_shell = cmd
            if v2 and self.v2_fault != "ok":
                await self.send(writer, stream, V2_FAULTS[self.v2_fault], maxdata)
            elif not await self.run_script(writer, stream, cmd, v2, maxdata):
                return
            streams.pop(stream.local, None)
            writer.write(message(A_CLSE, stream.local, stream.remote))
        except (ConnectionError, OSError):
            pass

    def shell_script(self, script):
        """`script` as this phone's shell takes it, with its sysfs zones as they are now."""
        if self.profile == "nocase" and re.search(r"(^|[\s;(])case\s", script):
            # This phone's shell cannot parse the command: it runs none of it.
            script = f"echo {shlex.quote(NOCASE_ERROR)} >&2; exit 1\n"
        self.sysfs_zones()
        return script.replace("/sys/class/thermal/", self.sysfs + "/")

    async def feed(self, writer, stream, stdin, maxdata):
        """A shell with no command (`shell,v2,raw:`) reads its commands from stdin, as
        adbd's does: each stdin packet's text goes to it, after the phone's commands
        as they are now; close-stdin closes it. Under a `v2` fault the stream answers
        the next packet with the malformed one and closes, as a new stream would."""
        try:
            while True:
                await stream.written.wait()
                stream.written.clear()
                while len(stream.inbox) >= 5:
                    packet_id, n = struct.unpack("<BI", stream.inbox[:5])
                    if len(stream.inbox) < 5 + n:
                        break
                    data = bytes(stream.inbox[5 : 5 + n])
                    del stream.inbox[: 5 + n]
                    if packet_id == 4:
                        stdin.close()
                        return
                    if packet_id == 0 and self.v2_fault != "ok":
                        await self.send(writer, stream, V2_FAULTS[self.v2_fault], maxdata)
                        writer.write(message(A_CLSE, stream.local, stream.remote))
                        stream.closed = True
                        stream.gone.set()
                        return
                    if packet_id == 0:
                        text = data.decode("utf-8", "replace")
                        self.last_shell = text
                        # The functions from a file: a shell reads a pipe a byte at a
                        # time, and would spread the phone's output over their 20 KB.
                        with open(self.functions, "w") as f:
                            f.write(self.shell_functions())
                        stdin.write(f". {self.functions}\n{self.shell_script(text)}".encode())
                        await stdin.drain()
        except (ConnectionError, OSError):
            pass

    async def run_script(self, writer, stream, script, v2, maxdata):
        """Runs `script` in mksh, streaming its output; False if the host went away first.
        An empty v2 script is a shell reading its commands from stdin (`feed`)."""
        reads_stdin = v2 and not script
        args = [] if reads_stdin else ["-c", self.shell_functions() + self.shell_script(script)]
        proc = await asyncio.create_subprocess_exec(
            HOST.mksh, *args,
            stdin=asyncio.subprocess.PIPE if reads_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if v2 else asyncio.subprocess.STDOUT,
            start_new_session=True, env={"PATH": HOST.bin},
        )
        HOST.shells.add(proc)
        feeding = None
        if reads_stdin:
            feeding = asyncio.ensure_future(self.feed(writer, stream, proc.stdin, maxdata))

        async def pump(pipe, packet_id):
            while True:
                data = await pipe.read(maxdata - 5)
                if not data:
                    return True
                payload = v2_packet(packet_id, data) if v2 else data.replace(b"\n", b"\r\n")
                if not await self.send(writer, stream, payload, maxdata):
                    return False

        pumps = asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2) if v2 else asyncio.sleep(0, True))
        gone = asyncio.ensure_future(stream.gone.wait())
        try:
            await asyncio.wait([pumps, gone], return_when=asyncio.FIRST_COMPLETED)
            if not pumps.done() or not all(pumps.result()):
                return False
            code = await proc.wait()
            if v2:
                return await self.send(writer, stream, v2_packet(3, bytes([code & 0xFF])), maxdata)
            return True
        finally:
            HOST.shells.discard(proc)
            gone.cancel()
            if feeding is not None:
                feeding.cancel()
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()
            if not pumps.done():
                pumps.cancel()
                try:
                    await pumps
                except asyncio.CancelledError:
                    pass


async def control(phones, reader, writer):
    by_name = {p.name: p for p in phones}
    while True:
        line = await reader.readline()
        if not line:
            break
        words = line.decode().split()
        reply = "ERR empty command"
        try:
            if not words:
                pass
            elif words[1] not in by_name:
                reply = f"ERR no phone named {words[1]!r}"
            elif words[0] == "set" and len(words) == 4:
                phone, key, value = by_name[words[1]], words[2], words[3]
                if key == "battery":
                    phone.battery = int(float(value))
                elif key == "temp":
                    phone.temp = float(value)
                elif key == "booting":
                    phone.force_booting = value == "1"
                elif key == "powered":
                    phone.powered = value == "1"
                elif key == "battery_health":
                    phone.battery_health = int(value)
                elif key == "data_free_mb":
                    phone.data_free_mb = int(value)
                elif key == "battery_dump":
                    if value not in ("indented", "flush", "nolevel"):
                        raise ValueError(f"battery_dump {value!r}: indented, flush or nolevel")
                    phone.battery_dump = value
                else:
                    raise ValueError(f"unknown key {key!r}")
                reply = "OK"
            elif words[0] == "prop" and len(words) >= 3:
                phone, key = by_name[words[1]], words[2]
                if len(words) > 3:
                    phone.props[key] = " ".join(words[3:])
                else:
                    phone.props.pop(key, None)
                reply = "OK"
            elif words[0] in ("wedge", "unwedge"):
                by_name[words[1]].wedged = words[0] == "wedge"
                reply = "OK"
            elif words[0] == "unplug":
                by_name[words[1]].unplug()
                reply = "OK"
            elif words[0] == "replug":
                if by_name[words[1]].server is None:
                    await by_name[words[1]].listen()
                reply = "OK"
            elif words[0] == "flood" and len(words) == 3:
                by_name[words[1]].flood_bytes = int(words[2])
                reply = "OK"
            elif words[0] == "v2" and len(words) == 3:
                if words[2] != "ok" and words[2] not in V2_FAULTS:
                    raise ValueError(f"v2 {words[2]!r}: ok or one of {', '.join(V2_FAULTS)}")
                by_name[words[1]].v2_fault = words[2]
                reply = "OK"
            elif words[0] == "reboots":
                reply = f"OK {by_name[words[1]].reboot_count}"
            elif words[0] == "last-shell":
                reply = "OK " + json.dumps(by_name[words[1]].last_shell)
            else:
                reply = f"ERR unknown command {words[0]!r}"
        except (IndexError, ValueError, OSError) as e:
            reply = f"ERR {e}"
        writer.write((reply + "\n").encode())
        await writer.drain()
    writer.close()


def stop_shells():
    """SIGKILL to every shell still running and its process group, then a wait for each:
    stopping the simulator stops its phones' commands with it."""
    for proc in list(HOST.shells):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in list(HOST.shells):
        try:
            os.waitpid(proc.pid, 0)
        except ChildProcessError:
            pass


async def main():
    global HOST
    HOST = Host()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phone", action="append", default=[], help="PROFILE:NAME[:PORT]")
    ap.add_argument("--profile", choices=PROFILES)
    ap.add_argument("--serial-name")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--reboot-secs", type=float, default=3.0)
    ap.add_argument("--shutdown-secs", type=float, default=0.05,
                    help="how long a phone keeps answering after accepting reboot:")
    ap.add_argument("--boot-secs", type=float, default=1.0)
    a = ap.parse_args()
    specs = list(a.phone)
    if a.profile:
        specs.append(f"{a.profile}:{a.serial_name or a.profile}:{a.port}")
    if not specs:
        ap.error("give --profile or at least one --phone")
    phones = []
    for spec in specs:
        parts = spec.split(":")
        profile, name = parts[0], parts[1] if len(parts) > 1 else parts[0]
        port = int(parts[2]) if len(parts) > 2 else 0
        phone = Phone(profile, name, port, a.reboot_secs, a.boot_secs, a.shutdown_secs)
        await phone.listen()
        phones.append(phone)
        print(f"PORT {phone.port} {phone.name}", flush=True)
    ctl = await asyncio.start_server(
        lambda r, w: control(phones, r, w), "127.0.0.1", a.control_port
    )
    print(f"CONTROL {ctl.sockets[0].getsockname()[1]}", flush=True)
    await stopped.wait()
    stop_shells()
    shutil.rmtree(HOST.root, ignore_errors=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
