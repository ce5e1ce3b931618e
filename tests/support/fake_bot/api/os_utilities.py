"""The stand-in of the real bot's api/os_utilities: the bot's own dimensions and state."""

import os
import shutil
import time

_STARTED = time.time()


def get_dimensions():
    return {
        "id": [os.environ.get("SWARMING_BOT_ID", "unknown")],
        "os": ["Linux"],
        "pool": ["default"],
    }


def get_state():
    usage = shutil.disk_usage(os.getcwd())
    return {
        "running_time": int(time.time() - _STARTED),
        "disks": {
            os.getcwd(): {
                "free_mb": usage.free // (1024 * 1024),
                "size_mb": usage.total // (1024 * 1024),
            }
        },
    }
