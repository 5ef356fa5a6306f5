"""Errors the corpus stages raise for users (each message names the file or key and the fix)."""
from __future__ import annotations


class TokenizerError(ValueError):
    """A tokenizer file is missing, inconsistent, or cannot be trained as configured (message says the fix)."""
