"""Logging set up once per process; only rank 0 prints INFO, other ranks print warnings and errors."""
from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
# At DEBUG these dump whole requests: the Authorization header (the AWS access key id and the
# request signature), presigned URLs, session tokens. They stay at INFO or above whatever log.level
# says; our own S3 code logs what a user needs (retries, stalls, failures) without credentials.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def process_rank() -> int:
    """This process's rank as the launchers export it (horovodrun/mpirun/Slurm), 0 when alone."""
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


def setup_logging(level: int = logging.INFO, rank: int | None = None) -> None:
    """Configure the root logger; ranks other than 0 only show warnings and errors."""
    rank = process_rank() if rank is None else rank
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    fmt = _FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
