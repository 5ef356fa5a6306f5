"""Errors every stage shares. Kept apart from `common.config` so that the schema, the loader and the
stages can all raise them without importing each other."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key, where it came from, and a fix."""
