"""The one place that knows whether we run under Horovod: `init_dist(engine) -> Dist`.

    dist = init_dist("mxnet")        # horovod.mxnet under horovodrun/mpirun, else a single process
    total = dist.allreduce_sum(np.array([loss_sum, tokens]))
    cfg_obj = dist.broadcast_object(obj)   # rank 0's object on every rank

The training loop uses only this object; engines use `dist.hvd` (the framework's Horovod module, or
None when alone) for `DistributedTrainer`/`DistributedOptimizer` and parameter broadcast.
Collectives here work on small host arrays (metrics, flags) and are exact in float64.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

_LAUNCHER_VARS = ("HOROVOD_RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def launched_by_horovod() -> bool:
    """True under horovodrun (Gloo or MPI) or a bare mpirun; False for a plain `python -m ...`."""
    if "HOROVOD_RANK" in os.environ:
        return True
    # PMIX_SIZE / SLURM_NTASKS: `srun --mpi=pmix` sets no PMI_SIZE; every rank would otherwise train
    # alone and all would write to the same checkpoint root.
    if "PMIX_RANK" in os.environ and int(os.environ.get("SLURM_NTASKS", os.environ.get("PMIX_SIZE", "1")) or 1) > 1:
        return True
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "HOROVOD_SIZE"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


class Dist:
    """Rank/size of this process and host-side collectives; a single process when `hvd` is None."""

    def __init__(self, hvd: Any = None, backend: str = "none"):
        self.hvd = hvd
        self.backend = backend                     # "none" | "mxnet" | "torch"
        if hvd is None:
            self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        else:
            self.rank, self.size = hvd.rank(), hvd.size()
            self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        self._count = 0                            # unique names for Horovod collectives

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def _name(self, what: str) -> str:
        self._count += 1
        return f"dist.{what}.{self._count}"

    # -- collectives on host arrays ------------------------------------------------------------
    def allreduce_sum(self, x: Any) -> Any:
        """Sum of a number or array over all ranks (float64); same type back (float or ndarray)."""
        arr = np.asarray(x, dtype=np.float64)
        if self.hvd is not None and self.size > 1:
            if self.backend == "mxnet":
                import mxnet as mx
                out = self.hvd.allreduce(mx.nd.array(arr.reshape(-1), dtype="float64"), average=False,
                                         name=self._name("sum")).asnumpy()
            else:
                import torch
                out = self.hvd.allreduce(torch.from_numpy(arr.reshape(-1).copy()), op=self.hvd.Sum,
                                         name=self._name("sum")).numpy()
            arr = out.reshape(arr.shape)
        return float(arr) if arr.ndim == 0 else arr

    def allreduce_mean(self, x: Any) -> Any:
        s = self.allreduce_sum(x)
        return s / self.size

    def _broadcast_bytes(self, data: bytes, root: int) -> bytes:
        if self.backend == "mxnet":
            import mxnet as mx
            n = self.hvd.broadcast(mx.nd.array([len(data)], dtype="int64"), root, name=self._name("n"))
            n = int(n.asnumpy()[0])
            buf = np.frombuffer(data, dtype=np.uint8) if self.rank == root else np.zeros(n, np.uint8)
            out = self.hvd.broadcast(mx.nd.array(buf, dtype="uint8"), root, name=self._name("b"))
            return out.asnumpy().tobytes()
        import torch
        n = self.hvd.broadcast(torch.tensor([len(data)], dtype=torch.int64), root, name=self._name("n"))
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == root
               else torch.zeros(int(n[0]), dtype=torch.uint8))
        return self.hvd.broadcast(buf, root, name=self._name("b")).numpy().tobytes()

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank `root`'s JSON-serializable object on every rank (JSON, not pickle)."""
        if self.hvd is None or self.size == 1:
            return obj
        data = json.dumps(obj).encode("utf-8") if self.rank == root else b""
        return json.loads(self._broadcast_bytes(data, root).decode("utf-8"))

    def barrier(self) -> None:
        if self.hvd is not None and self.size > 1:
            self.allreduce_sum(0.0)

    def shutdown(self) -> None:
        if self.hvd is not None:
            self.hvd.shutdown()


def init_dist(engine_name: str) -> Dist:
    """Horovod for `engine_name` ("mxnet" | "torch") when launched by horovodrun/mpirun, else alone."""
    if not launched_by_horovod():
        return Dist()
    # Under Gloo, hvd.init() waits HOROVOD_GLOO_TIMEOUT_SECONDS (Horovod's default: 30 s) for every rank
    # to arrive, then aborts the waiting process from a C++ thread: SIGABRT, exit 134, "terminate called
    # after throwing an instance of 'gloo::IoException' ... Wait timeout". Ranks importing MXNet/torch
    # on a loaded machine can arrive further apart than that (reproduced with a rank 30+ s late); the
    # launcher stops a job whose rank died anyway, so waiting longer costs nothing.
    os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", "300")
    if engine_name == "mxnet":
        import horovod.mxnet as hvd
    elif engine_name == "torch":
        import horovod.torch as hvd
    else:
        raise ValueError(f"train.engine={engine_name!r}: use mxnet or torch")
    hvd.init()
    return Dist(hvd, backend=engine_name)
