"""Which CUDA GPUs this machine has, read from the driver (no framework import), and whether
MXNet 1.9.1 can run on them.

MXNet 1.9.1's CUDA wheels carry kernels up to compute capability 8.6 (Ampere). On a newer GPU
(8.9 Ada, 9.0 Hopper e.g. H100) its kernels fail at the first operator, often after minutes of
setup, so the engine checks first and stops with a message pointing at the torch engine.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Optional

MAX_MXNET_CC = (8, 6)


class UnsupportedGPUError(RuntimeError):
    """The GPU is newer than any kernel in the MXNet build."""


def _driver_query(index: int) -> Optional[tuple[str, tuple[int, int]]]:
    """(name, (major, minor)) of CUDA device `index` through libcuda, or None without a driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    if cuda.cuInit(0) != 0:
        return None
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or index >= count.value:
        return None
    dev = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    return name.value.decode(errors="replace"), (major.value, minor.value)


def _smi_query(index: int) -> Optional[tuple[str, tuple[int, int]]]:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader",
                              "-i", str(index)], capture_output=True, text=True, timeout=30).stdout
        name, cap = [s.strip() for s in out.strip().split(",")]
        major, minor = cap.split(".")
        return name, (int(major), int(minor))
    except (ValueError, OSError, subprocess.SubprocessError):
        return None


def _driver_count() -> Optional[int]:
    """CUDA devices the driver shows this process (CUDA_VISIBLE_DEVICES applied), or None without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return None
    return count.value


def _smi_count() -> Optional[int]:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def visible_gpus() -> list[tuple[str, tuple[int, int]]]:
    """(name, compute capability) of every GPU this process can use; [] on a machine without any.

    Through libcuda when there is a driver (honours CUDA_VISIBLE_DEVICES), else nvidia-smi."""
    n = _driver_count()
    if n is None:
        n = _smi_count() or 0
    return [info for info in (gpu_info(i) for i in range(n)) if info is not None]


def gpu_info(index: int) -> Optional[tuple[str, tuple[int, int]]]:
    """(device name, compute capability) of GPU `index`, or None when there is none."""
    return _driver_query(index) or _smi_query(index)


def check_mxnet_supports(index: int) -> Optional[str]:
    """Raise UnsupportedGPUError when GPU `index` is beyond MXNet 1.9.1's kernels; return its name."""
    info = gpu_info(index)
    if info is None:
        return None
    name, cc = info
    if cc > MAX_MXNET_CC:
        raise UnsupportedGPUError(
            f"MXNet 1.9.1 has no kernels for compute capability {cc[0]}.{cc[1]} ({name}; the newest it "
            f"supports is {MAX_MXNET_CC[0]}.{MAX_MXNET_CC[1]}, e.g. A100/A10/RTX 30xx). "
            "Set train.engine: torch (e.g. --set train.engine=torch) to train on this GPU.")
    return name
