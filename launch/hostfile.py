#!/usr/bin/env python3
"""Make and check Horovod/OpenMPI hostfiles (`host slots=N` per line); standard library only.

    python launch/hostfile.py make --hosts node1,node2 --slots 8 -o hosts.txt
    python launch/hostfile.py make --slurm -o hosts.txt      # SLURM_JOB_NODELIST, slots = GPUs per node
    python launch/hostfile.py check hosts.txt --np 16        # prints the process count to use; exit 2 if bad

Slots are processes per host, one per GPU. `--slots` defaults to the GPUs Slurm gave each node
(SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE / SLURM_NTASKS_PER_NODE), else the GPUs `nvidia-smi -L`
lists on this machine (the hosts of one job are assumed alike). Slurm node lists
(`gpu-[01-04,07],login1`) are expanded with `scontrol show hostnames`, or here when scontrol is absent.

`check` accepts `host slots=N`, `host:N` and a bare `host` (1 slot), `#` comments and blank lines; it
rejects duplicates and non-positive slots, and `--np` values that do not fill whole hosts (every host
runs the same number of processes, so data-parallel batches and hierarchical allreduce stay uniform).
Errors name the file and line, and the fix.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Optional, Sequence

_LINE_RE = re.compile(r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*)(?::(?P<colon>\S+)|\s+slots\s*=\s*(?P<slots>\S+))?"
                      r"(?:\s+max[-_]slots\s*=\s*\S+)?$")


class HostfileError(ValueError):
    """A hostfile or host list is unusable; the message says where and how to fix it."""


# ----------------------------------------------------------------------------------------------------
# Slurm node lists


def _split_top(s: str) -> list[str]:
    """Split on commas outside brackets: 'a[1-2,4],b' -> ['a[1-2,4]', 'b']."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostfileError(f"node list {s!r}: unbalanced ']'")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise HostfileError(f"node list {s!r}: unbalanced '['")
    out.append(cur)
    return [x for x in (p.strip() for p in out) if x]


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact node list -> host names, as `scontrol show hostnames` prints them.

    'gpu-[01-03,07],login1' -> ['gpu-01', 'gpu-02', 'gpu-03', 'gpu-07', 'login1'] (zero padding kept;
    several bracket groups in one name multiply out).
    """
    hosts: list[str] = []
    for item in _split_top(nodelist):
        m = re.search(r"\[([^\]]*)\]", item)
        if not m:
            hosts.append(item)
            continue
        head, tail = item[:m.start()], item[m.end():]
        for rng in m.group(1).split(","):
            a, _, b = rng.partition("-")
            if not a.isdigit() or (b and not b.isdigit()):
                raise HostfileError(f"node list {nodelist!r}: bad range {rng!r}")
            lo, hi = int(a), int(b or a)
            if hi < lo:
                raise HostfileError(f"node list {nodelist!r}: range {rng!r} runs backwards")
            for n in range(lo, hi + 1):
                hosts.extend(expand_nodelist(f"{head}{n:0{len(a)}d}{tail}"))
    return hosts


def slurm_hosts(nodelist: Optional[str] = None) -> list[str]:
    """Hosts of the current Slurm job: `scontrol show hostnames` when available, else expanded here."""
    nodelist = nodelist or os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        raise HostfileError("SLURM_JOB_NODELIST is not set: run inside a Slurm allocation (sbatch/salloc), "
                            "or give the hosts with --hosts a,b,c")
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True,
                                 text=True, timeout=30).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass   # scontrol present but unusable here: expand it ourselves
    return expand_nodelist(nodelist)


def default_slots() -> int:
    """Processes per host: Slurm's GPUs (or tasks) per node, else this machine's GPU count."""
    for var in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_NTASKS_PER_NODE"):
        v = os.environ.get(var, "")
        m = re.search(r"(\d+)(?:\(x\d+\))?$", v)   # "8", "a100:8", "8(x4)"
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
            n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
            if n:
                return n
        except (subprocess.SubprocessError, OSError):
            pass
    raise HostfileError("cannot tell how many processes per host: no SLURM_GPUS_ON_NODE and no GPU in "
                        "`nvidia-smi -L`; pass --slots N (one process per GPU)")


# ----------------------------------------------------------------------------------------------------
# hostfiles


def parse_hostfile(path: str) -> list[tuple[str, int]]:
    """[(host, slots)] in file order; raises HostfileError naming the line."""
    if not os.path.isfile(path):
        raise HostfileError(f"hostfile not found: {path} (make one with `python launch/hostfile.py make --hosts "
                            "a,b --slots 8 -o hosts.txt`, or --slurm inside an allocation)")
    entries: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for no, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _LINE_RE.match(line)
            if not m:
                raise HostfileError(f"{path}:{no}: {line!r} is not 'HOST slots=N' (or HOST:N)")
            host, s = m.group("host"), m.group("slots") or m.group("colon") or "1"
            if not s.isdigit() or int(s) <= 0:
                raise HostfileError(f"{path}:{no}: slots {s!r} for {host} must be a positive integer")
            if host in seen:
                raise HostfileError(f"{path}:{no}: {host} is listed again (first on line {seen[host]}); "
                                    "give each host once with all its slots")
            seen[host] = no
            entries.append((host, int(s)))
    if not entries:
        raise HostfileError(f"{path} lists no hosts")
    return entries


def resolve_np(entries: list[tuple[str, int]], np_: Optional[int], where: str) -> int:
    """The process count: all slots by default; a given one must fill whole hosts and fit."""
    total = sum(s for _, s in entries)
    per = {s for _, s in entries}
    if np_ is None:
        return total
    if np_ <= 0:
        raise HostfileError(f"--np {np_} must be positive")
    if np_ > total:
        raise HostfileError(f"--np {np_} is more than the {total} slots in {where} "
                            f"({len(entries)} hosts): add hosts or lower --np")
    if len(per) == 1:
        slots = per.pop()
        if np_ % slots:
            raise HostfileError(f"--np {np_} is not a multiple of the {slots} slots per host in {where}: "
                                f"use a multiple such as {max(1, np_ // slots) * slots} (whole hosts)")
    elif np_ != total:
        raise HostfileError(f"{where} gives hosts different slot counts ({sorted(per)}); with uneven hosts "
                            f"use every slot (--np {total}) or make the hosts alike")
    return np_


def format_hostfile(hosts: Sequence[str], slots: int) -> str:
    return "".join(f"{h} slots={slots}\n" for h in hosts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="launch/hostfile.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="write a hostfile from --hosts or the Slurm allocation")
    src = mk.add_mutually_exclusive_group(required=True)
    src.add_argument("--hosts", help="comma-separated hosts (Slurm ranges allowed: node[1-4])")
    src.add_argument("--slurm", action="store_true", help="the hosts of this Slurm job (SLURM_JOB_NODELIST)")
    mk.add_argument("--slots", type=int, help="processes per host (default: GPUs per node)")
    mk.add_argument("-o", "--out", help="output file (default: stdout)")
    ck = sub.add_parser("check", help="validate a hostfile; print the number of processes to run")
    ck.add_argument("hostfile")
    ck.add_argument("--np", type=int, help="processes wanted (default: every slot)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "make":
            hosts = slurm_hosts() if args.slurm else expand_nodelist(args.hosts)
            if not hosts:
                raise HostfileError("no hosts given")
            if len(set(hosts)) != len(hosts):
                raise HostfileError(f"hosts repeat in {hosts}: give each host once")
            slots = args.slots if args.slots is not None else default_slots()
            if slots <= 0:
                raise HostfileError(f"--slots {slots} must be positive")
            text = format_hostfile(hosts, slots)
            if args.out:
                tmp = args.out + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, args.out)
                print(f"hostfile.py: wrote {args.out}: {len(hosts)} hosts x {slots} slots = {len(hosts) * slots} "
                      "processes", file=sys.stderr)
            else:
                sys.stdout.write(text)
        else:
            entries = parse_hostfile(args.hostfile)
            n = resolve_np(entries, args.np, args.hostfile)
            print(f"hostfile.py: {args.hostfile}: {len(entries)} hosts, {sum(s for _, s in entries)} slots; "
                  f"running {n} processes", file=sys.stderr)
            print(n)
    except HostfileError as e:
        print(f"hostfile.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
