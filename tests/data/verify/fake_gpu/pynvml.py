"""A stand-in for nvidia-ml-py's `pynvml` that plays the GPU named by $FAKE_GPU (a JSON file).

Only for tests of the gpu step's probe script on machines without an NVIDIA GPU: it answers the calls
the probe makes the way NVML does on that GPU (GB10 raises NVMLError_NotSupported for memory info).
`"absent": true` makes the import fail, as when nvidia-ml-py is not installed.
"""

import json
import os

with open(os.environ["FAKE_GPU"]) as _spec:
    SPEC = json.load(_spec)
if SPEC.get("absent"):
    raise ImportError("No module named 'pynvml'")


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    def __str__(self):
        return "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self):
        return "NVML Shared Library Not Found"


class _Memory:
    def __init__(self, total, used):
        self.total, self.used, self.free = total, used, total - used


def nvmlInit():
    if SPEC.get("library_missing"):
        raise NVMLError_LibraryNotFound()


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return SPEC["driver"]


def nvmlSystemGetCudaDriverVersion():
    return SPEC["cuda"]


def nvmlDeviceGetCount():
    return len(SPEC["gpus"])


def nvmlDeviceGetHandleByIndex(index):
    return SPEC["gpus"][index]


def nvmlDeviceGetName(handle):
    return handle["name"].encode()  # older pynvml releases return bytes


def nvmlDeviceGetCudaComputeCapability(handle):
    return tuple(handle["compute_capability"])


def nvmlDeviceGetMemoryInfo(handle):
    if handle.get("memory") is None:
        raise NVMLError_NotSupported()
    return _Memory(*handle["memory"])
