# -*- coding: utf-8 -*-
"""Swarming bot hooks for a Raspberry Pi run by test_machine_monitor.

The Swarming server hands this file to the bot (bots.cfg `bot_config_script`). Each
hook forwards to test_machine_monitor over local HTTP, at the address in the
environment variable TEST_MACHINE_MONITOR_HOOK_ADDR (set by test_machine_monitor for
the bot it runs; default 127.0.0.1:11000). test_machine_monitor knows the phones and
answers from memory.

Rules this file keeps:
- Python standard library only; runs on Python 3.7 to 3.13.
- No hook ever raises: an exception in get_dimensions or get_state would quarantine
  the bot with a useless message, so every failure becomes a clear `quarantined`
  reason instead, and the on_* hooks log and return.
- Every HTTP call has a deadline of at most 5 seconds.

Printed by `test_machine_monitor bot-config`; do not edit a deployed copy, edit the
repository's src/bot/bot_config.py.
"""

import json
import logging
import os
import time

try:
    import http.client as _http_client
    import urllib.request as _urllib_request
except Exception:  # pragma: no cover - the bot itself needs both
    _http_client = None
    _urllib_request = None

try:
    from api import os_utilities
except Exception:  # outside the bot, or a bot without it
    os_utilities = None

ADDR_ENV = "TEST_MACHINE_MONITOR_HOOK_ADDR"
# Every call names its bot, so that a monitor running one bot per phone (--bots
# per-device) answers for this bot's phone alone. The monitor sets the variable for the
# bots it runs.
BOT_ID_ENV = "SWARMING_BOT_ID"
BOT_HEADER = "X-Swarming-Bot-Id"
DEFAULT_ADDR = "127.0.0.1:11000"
# Seconds allowed for one call to the monitor or to the token endpoint, all included.
CALL_DEADLINE = 5.0
# The deployment's token endpoint description, read when the monitor cannot help.
TOKEN_CONFIG_PATH = "/etc/swarming_config/oauth2_access_token_config.json"
# The monitor refuses bodies over 1 MiB; the after-task summary is dropped above this.
MAX_BODY = 1024 * 1024

# Used only while the monitor cannot be reached: the same values as its defaults
# (src/config/settings.rs), so an SD card bot does not quarantine itself on disk space
# because the bot's own defaults want gigabytes free.
FALLBACK_SETTINGS = {
    "free_partition": {
        "root": {"size": 268435456, "max_percent": 3.0, "min_percent": 1.0},
        "bot": {
            "size": 536870912,
            "max_percent": 5.0,
            "min_percent": 2.0,
            "wiggle": 104857600,
        },
    },
    "caches": {"isolated": {"size": 2147483648, "items": 10240}},
}

_log = logging.getLogger("test_machine_monitor_hooks")


class MonitorError(Exception):
    """The monitor could not be reached or answered badly; the message says how."""


def _monitor_addr():
    raw = os.environ.get(ADDR_ENV) or DEFAULT_ADDR
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MonitorError("%s=%r is not HOST:PORT" % (ADDR_ENV, raw))
    return host.strip("[]"), int(port)


def _call(method, path, payload=None):
    """Calls the monitor and returns its decoded JSON answer, or raises MonitorError."""
    if _http_client is None:
        raise MonitorError("http.client is not importable")
    host, port = _monitor_addr()
    deadline = time.time() + CALL_DEADLINE
    body = None
    headers = {}
    bot_id = os.environ.get(BOT_ID_ENV)
    if bot_id:
        headers[BOT_HEADER] = bot_id
    if payload is not None:
        body = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    conn = _http_client.HTTPConnection(host, port, timeout=CALL_DEADLINE)
    try:
        conn.request(method, path, body=body, headers=headers)
        if conn.sock is not None:
            conn.sock.settimeout(max(0.1, deadline - time.time()))
        resp = conn.getresponse()
        data = resp.read(MAX_BODY + 1)
        status = resp.status
    except (OSError, _http_client.HTTPException) as e:
        raise MonitorError("%s %s at %s:%d: %s" % (method, path, host, port, str(e) or type(e).__name__))
    finally:
        conn.close()
    if time.time() > deadline:
        raise MonitorError("%s %s took longer than %ss" % (method, path, CALL_DEADLINE))
    try:
        answer = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise MonitorError("%s %s answered %d with invalid JSON: %s" % (method, path, status, e))
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise MonitorError("%s %s answered %d: %s" % (method, path, status, error or data[:200]))
    return answer


def _unreachable(e):
    return "test_machine_monitor unreachable: %s" % (e,)


def _bot_id(bot, dims):
    bot_id = getattr(bot, "id", None) if bot is not None else None
    if bot_id:
        return bot_id
    ids = dims.get("id") if isinstance(dims, dict) else None
    if isinstance(ids, list) and ids:
        return ids[0]
    return None


def _own_dimensions():
    try:
        dims = os_utilities.get_dimensions() if os_utilities else {}
        return dict(dims) if isinstance(dims, dict) else {}
    except Exception as e:
        _log.warning("os_utilities.get_dimensions() failed: %s", e)
        return {}


def _own_state():
    try:
        state = os_utilities.get_state() if os_utilities else {}
        return dict(state) if isinstance(state, dict) else {}
    except Exception as e:
        _log.warning("os_utilities.get_state() failed: %s", e)
        return {}


def _is_dimensions(d):
    if not isinstance(d, dict):
        return False
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, list) or not v:
            return False
        if not all(isinstance(x, str) for x in v):
            return False
    return True


def get_dimensions(bot):
    """The bot's own dimensions overlaid by the monitor with the phones' ones."""
    own = {}
    try:
        own = _own_dimensions()
        bot_id = _bot_id(bot, own)
        if bot_id:
            own["id"] = [bot_id]
        try:
            dims = _call("POST", "/get_dimensions", own)
            if not _is_dimensions(dims):
                raise MonitorError("/get_dimensions answered something that is not {str: [str]}")
            if bot_id and dims.get("id") != [bot_id]:
                raise MonitorError(
                    "/get_dimensions answered id %r, but this bot is %r" % (dims.get("id"), bot_id)
                )
            return dims
        except MonitorError as e:
            _log.error("get_dimensions: %s", e)
            own["quarantined"] = [_unreachable(e)]
            return own
    except Exception as e:  # never raise: that would quarantine with a useless message
        _log.exception("get_dimensions: unexpected error")
        own["quarantined"] = [_unreachable("hook script error: %s" % (e,))]
        return own


def get_state(bot):
    """The bot's own state plus the monitor's devices, monitor facts and reasons."""
    own = {}
    try:
        own = _own_state()
        try:
            state = _call("POST", "/get_state", own)
            if not isinstance(state, dict):
                raise MonitorError("/get_state answered something that is not an object")
            return state
        except MonitorError as e:
            _log.error("get_state: %s", e)
            own["quarantined"] = _unreachable(e)
            return own
    except Exception as e:
        _log.exception("get_state: unexpected error")
        own["quarantined"] = _unreachable("hook script error: %s" % (e,))
        return own


def get_settings(bot):
    """Settings fit for an SD card, merged by the bot over its defaults."""
    try:
        settings = _call("GET", "/get_settings")
        if not isinstance(settings, dict):
            raise MonitorError("/get_settings answered something that is not an object")
        return settings
    except Exception as e:
        _log.error("get_settings: %s; using the built-in SD card settings", e)
        return json.loads(json.dumps(FALLBACK_SETTINGS))


def _token_from_config(path):
    """Fetches a token as the deployment's token config describes; returns (headers, expiry)."""
    with open(path) as f:
        config = json.load(f)
    if not isinstance(config, dict) or not isinstance(config.get("url"), str):
        raise ValueError("%s: expected {\"url\": ..., \"headers\": {...}}" % path)
    headers = config.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("%s: \"headers\" must be an object" % path)
    request = _urllib_request.Request(config["url"], headers=headers)
    started = time.time()
    with _urllib_request.urlopen(request, timeout=CALL_DEADLINE) as resp:
        answer = json.loads(resp.read(MAX_BODY).decode("utf-8"))
    token = answer.get("access_token") if isinstance(answer, dict) else None
    expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)):
        raise ValueError("token endpoint %s answered without access_token/expires_in" % config["url"])
    return {"Authorization": "Bearer %s" % token}, int(started + expires_in)


def get_authentication_headers(bot):
    """(headers, unix expiry) from the monitor's token, else from the token config."""
    try:
        try:
            answer = _call("GET", "/get_authentication_headers")
            headers = answer.get("headers") if isinstance(answer, dict) else None
            expiry = answer.get("expiry") if isinstance(answer, dict) else None
            if not isinstance(headers, dict) or not isinstance(expiry, (int, float)):
                raise MonitorError("/get_authentication_headers answered without headers/expiry")
            return headers, int(expiry)
        except MonitorError as e:
            _log.warning("get_authentication_headers: %s; reading %s", e, TOKEN_CONFIG_PATH)
        return _token_from_config(TOKEN_CONFIG_PATH)
    except Exception as e:
        # An expiry of 0 makes the bot call again before its next request, so it picks
        # up a token as soon as one can be had; (x, None) would disable auth for good.
        _log.error("get_authentication_headers: no token: %s", e)
        return {}, 0


def _notify(path, payload=None):
    try:
        _call("POST", path, payload)
    except Exception as e:
        _log.error("%s: %s", path.lstrip("/"), e)


def on_before_task(bot, bot_file=None, runner_cmd=None, runner_env=None):
    _notify("/on_before_task", {})


def on_after_task(bot, failure=None, internal_failure=None, dimensions=None, summary=None):
    try:
        payload = {
            "failure": bool(failure) if failure is not None else None,
            "internal_failure": bool(internal_failure) if internal_failure is not None else None,
            "dimensions": dimensions if isinstance(dimensions, dict) else None,
            "summary": summary if isinstance(summary, dict) else None,
        }
        try:
            if len(json.dumps(payload)) > MAX_BODY:
                payload["summary"] = None
            if len(json.dumps(payload)) > MAX_BODY:
                payload["dimensions"] = None
        except (TypeError, ValueError):
            payload["summary"] = None
            payload["dimensions"] = None
    except Exception:
        payload = {}
    _notify("/on_after_task", payload)


def on_bot_shutdown(bot):
    _notify("/on_bot_shutdown")
