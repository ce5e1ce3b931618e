"""Plays the Swarming bot's side of bot_config.py: imports the hook script (as printed
by `test_machine_monitor bot-config`) next to a fake `api.os_utilities`, calls every
hook and prints what they returned as one JSON object.

Usage: hook_driver.py BOT_CONFIG_PY BOT_ID [--token-server]

The monitor's address comes from TEST_MACHINE_MONITOR_HOOK_ADDR, as in production.
With --token-server the driver also serves a token endpoint on loopback, writes a
token config pointing at it and points the script's TOKEN_CONFIG_PATH there, so the
fallback path can be checked. Standard library only; runs on Python 3.7+.
"""

import http.server
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading

FAKE_OS_UTILITIES = '''
def get_dimensions():
    return {"id": ["%(bot_id)s"], "os": ["Linux", "Debian"], "cpu": ["arm"], "python": ["3"]}

def get_state():
    return {"running_time": 12, "disks": {"/": {"free_mb": 1000, "size_mb": 15000}}}
'''


class Bot(object):
    def __init__(self, bot_id):
        self.id = bot_id


class Records(logging.Handler):
    def __init__(self):
        logging.Handler.__init__(self)
        self.lines = []

    def emit(self, record):
        self.lines.append("%s %s" % (record.levelname, record.getMessage()))


class TokenHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps(
            {"access_token": "tok-from-config", "expires_in": 3600, "token_type": "Bearer"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    script, bot_id = sys.argv[1], sys.argv[2]
    token_server = "--token-server" in sys.argv[3:]
    work = tempfile.mkdtemp(prefix="hook-driver-")
    try:
        os.makedirs(os.path.join(work, "api"))
        with open(os.path.join(work, "api", "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(work, "api", "os_utilities.py"), "w") as f:
            f.write(FAKE_OS_UTILITIES % {"bot_id": bot_id})
        sys.path.insert(0, work)
        spec = importlib.util.spec_from_file_location("bot_config", script)
        bot_config = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bot_config)

        records = Records()
        logging.getLogger().addHandler(records)
        logging.getLogger().setLevel(logging.DEBUG)

        server = None
        if token_server:
            server = http.server.HTTPServer(("127.0.0.1", 0), TokenHandler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            config = os.path.join(work, "token_config.json")
            with open(config, "w") as f:
                json.dump(
                    {
                        "url": "http://127.0.0.1:%d/token" % server.server_address[1],
                        "headers": {"Metadata-Flavor": "Google"},
                    },
                    f,
                )
            bot_config.TOKEN_CONFIG_PATH = config
        else:
            bot_config.TOKEN_CONFIG_PATH = os.path.join(work, "no_such_token_config.json")

        bot = Bot(bot_id)
        out = {"raised": [], "python": "%d.%d" % sys.version_info[:2]}

        def call(name, *args):
            try:
                return getattr(bot_config, name)(bot, *args)
            except BaseException as e:  # the script must never raise
                out["raised"].append("%s: %r" % (name, e))
                return None

        out["dimensions"] = call("get_dimensions")
        out["state"] = call("get_state")
        out["settings"] = call("get_settings")
        auth = call("get_authentication_headers")
        out["auth"] = list(auth) if isinstance(auth, tuple) else auth
        out["auth_is_tuple"] = isinstance(auth, tuple)
        out["on_before_task"] = call("on_before_task", "/tmp/bot_file", ["run"], {})
        out["on_after_task"] = call(
            "on_after_task", True, False, {"pool": ["Skia"]}, {"exit_code": 1}
        )
        out["on_bot_shutdown"] = call("on_bot_shutdown")
        out["fallback_settings"] = bot_config.FALLBACK_SETTINGS
        out["logs"] = records.lines
        if server is not None:
            server.shutdown()
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
