"""Failure messages for multi-process runs: every rank's own tail, not just the last 3000 characters.

horovodrun interleaves the workers' output as `[RANK]<stderr>:line` (mpirun: `[1,RANK]<stderr>:`).
When one rank dies, the survivors print long "Horovod has been shut down" tracebacks that push the
first rank's real error out of a plain tail; this keeps the last lines of each rank separately.
"""
from __future__ import annotations

import re
import subprocess

_RANK_LINE = re.compile(r"^\[(?:\d+,)?(\d+)\]<(?:stdout|stderr)>:?(.*)$")


def explain(r: subprocess.CompletedProcess, lines_per_rank: int = 40) -> str:
    """A readable report of a finished launcher process: exit code, each rank's last lines, the rest."""
    text = (r.stdout or "") + "\n" + (r.stderr or "")
    per_rank: dict[str, list[str]] = {}
    other: list[str] = []
    for line in text.splitlines():
        m = _RANK_LINE.match(line)
        if m:
            per_rank.setdefault(m.group(1), []).append(m.group(2))
        else:
            other.append(line)
    parts = [f"exit code {r.returncode}"]
    for rank in sorted(per_rank, key=int):
        parts.append(f"--- rank {rank} (last {lines_per_rank} lines) ---")
        parts.extend(per_rank[rank][-lines_per_rank:])
    parts.append("--- launcher and unprefixed output (last 40 lines) ---")
    parts.extend(other[-40:])
    return "\n".join(parts)
