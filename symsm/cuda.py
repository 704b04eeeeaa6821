"""The CUDA backend's run-time helpers, public: device detection, the simulator switch, data resident on the
GPU and the CUDA loss (the implementation is symsm.runtime.device)."""

from .runtime.device import (
    SIMULATOR_ENV,
    CudaCompiledLoss,
    CudaUnavailableError,
    DeviceData,
    device_available,
    device_name,
    import_cuda,
    simulator_enabled,
)

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
