"""Run BY THE IMAGE'S PYTHON (under qemu-user or chroot): checks that the runtime the bot
needs is there. Argument: the bot's module list (tests/support/bot_imports.txt), one per
line, passed as text so the script works whatever the guest sees of the host's files.

Prints one line per failure and exits 1 if any; prints a summary otherwise.
"""
import importlib
import sys
import warnings

warnings.simplefilter("ignore")  # sre_constants and friends are deprecated, not missing
names = [l.strip() for l in sys.argv[1].splitlines() if l.strip() and not l.startswith("#")]
failures = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:  # any failure, not only ImportError, means the bot would break
        failures.append(f"import {name}: {type(e).__name__}: {e}")

# What a trimmed scratch image most easily loses: the CA bundle Python's ssl loads by
# default, the passwd entry getpass/pwd read, and name resolution through nsswitch.conf.
try:
    import ssl

    cas = ssl.create_default_context().cert_store_stats()["x509_ca"]
    if cas < 100:
        failures.append(f"ssl default context has {cas} CA certificates, expected the Mozilla bundle")
except Exception as e:
    failures.append(f"ssl default context: {type(e).__name__}: {e}")
try:
    import pwd

    if pwd.getpwuid(0).pw_dir != "/root":
        failures.append(f"pwd.getpwuid(0) = {pwd.getpwuid(0)}")
except Exception as e:
    failures.append(f"pwd.getpwuid(0): {type(e).__name__}: {e}")
try:
    import socket

    socket.getaddrinfo("localhost", 80)
except Exception as e:
    failures.append(f"getaddrinfo(localhost): {type(e).__name__}: {e}")

for f in failures:
    print(f)
if failures:
    sys.exit(1)
print(f"ok: {len(names)} bot modules import; ssl CAs, pwd and localhost resolve (Python {sys.version.split()[0]})")
