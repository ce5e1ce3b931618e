"""Holds config.json and, when the server injects one, bot_config.py (the hooks)."""
