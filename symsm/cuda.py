"""The CUDA backend's run-time helpers, public: device detection, the simulator switch (the implementation is
symsm.backends.cuda.device), data resident on the GPU and the CUDA loss (symsm.runtime.device)."""

from .backends.cuda.device import (
    SIMULATOR_ENV,
    CudaUnavailableError,
    device_available,
    device_name,
    import_cuda,
    simulator_enabled,
)
from .runtime.device import CudaCompiledLoss, DeviceData

__all__ = [
    "SIMULATOR_ENV",
    "CudaCompiledLoss",
    "CudaUnavailableError",
    "DeviceData",
    "device_available",
    "device_name",
    "import_cuda",
    "simulator_enabled",
]
