"""The stand-in bot's `api` package: what a hook script may import, as in the real bot."""
