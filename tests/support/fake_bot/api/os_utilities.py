"""The stand-in of the real bot's api/os_utilities: the bot's own dimensions and state.

It asks the host for what the real one asks, in the same way, so that an image or a
machine that lacks something the real bot needs fails here too:
- every state (each cycle) runs `/bin/df -k -P -l` by its absolute path with LANG=C,
  unguarded (a missing df raises FileNotFoundError and kills the bot), keeps the rows of
  /dev/ sources, reads the size from field 2 and statvfs()es field 6, skipping the mount
  points that cannot be stat'ed;
- it reads MemTotal from /proc/meminfo (no /proc: an error, as in the real bot);
- the first state runs `lspci -mm -nn`, `dpkg -s libgl1-mesa-dri`, `lsblk -d -o
  name,rota` and `pip freeze` once, tolerates their absence, and reports the ones that
  answered under `host_tools`.
"""

import os
import subprocess
import time

_STARTED = time.time()
_OPTIONAL = None


def _optional_tools():
    """What the guarded tools said, or None for each one that is missing or failed."""
    global _OPTIONAL
    if _OPTIONAL is None:
        _OPTIONAL = {}
        for name, argv in (
            ("lspci", ["lspci", "-mm", "-nn"]),
            ("dpkg", ["dpkg", "-s", "libgl1-mesa-dri"]),
            ("lsblk", ["lsblk", "-d", "-o", "name,rota"]),
            ("pip", ["pip", "freeze"]),
        ):
            try:
                _OPTIONAL[name] = subprocess.check_output(argv, stderr=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError):
                _OPTIONAL[name] = None
    return _OPTIONAL


def _df_rows():
    proc = subprocess.Popen(["/bin/df", "-k", "-P", "-l"], env={"LANG": "C"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.communicate()[0]
    for line in out.decode("utf-8").splitlines():
        if line.startswith("/dev/"):
            yield line.split()


def get_disks_info():
    disks = {}
    for items in _df_rows():
        path, size_kb = items[5], float(items[1])
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        disks[path] = {
            "free_mb": round(st.f_bfree * st.f_frsize / 1024.0 / 1024.0, 1),
            "size_mb": round(size_kb / 1024.0, 1),
        }
    return disks


def get_physical_ram_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise TypeError("no MemTotal in /proc/meminfo")


def get_dimensions():
    return {
        "id": [os.environ.get("SWARMING_BOT_ID", "unknown")],
        "os": ["Linux"],
        "pool": ["default"],
    }


def get_state():
    return {
        "running_time": int(time.time() - _STARTED),
        "ram": get_physical_ram_mb(),
        "disks": get_disks_info(),
        "host_tools": sorted(k for k, v in _optional_tools().items() if v is not None),
    }
