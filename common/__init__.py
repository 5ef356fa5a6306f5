"""Pieces every stage shares: the config tree, atomic file writes, logging."""
