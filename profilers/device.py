"""Device detection: what the machine is (NVML for GPUs, the platform module for the CPU) and which
catalog entry it corresponds to. No benchmarking here."""
from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Optional

from profilers.errors import ProfilerError

# NVML product name -> catalog name. Order matters: the first pattern that matches wins, so the
# variants (PCIe, NVL) come before the plain SXM names they contain. Variants the catalog lacks map to
# names of their own, so they never borrow another card's datasheet.
_CATALOG_NAMES: list[tuple[str, str]] = [
    (r"H200", "H200"),
    (r"H100.*PCIe", "H100-PCIe"),
    (r"H100.*NVL", "H100-NVL"),
    (r"H100", "H100-SXM"),
    (r"A100-SXM4-80GB", "A100-80GB-SXM"),
    (r"B200", "B200"),
    (r"L40S", "L40S"),
    (r"\bL4\b", "L4"),
    (r"A10G", "A10G"),
    (r"RTX 4090", "RTX-4090"),
]


def catalog_name(device_name: str) -> str:
    """Map an NVML/torch device name to the catalog's GPU name ("NVIDIA H200" -> "H200").
    Unknown names come back cleaned ("NVIDIA Foo 12GB" -> "Foo-12GB") so the output file still gets a name."""
    for pattern, name in _CATALOG_NAMES:
        if re.search(pattern, device_name, re.IGNORECASE):
            return name
    cleaned = re.sub(r"^NVIDIA\s+", "", device_name.strip())
    return re.sub(r"[^A-Za-z0-9.]+", "-", cleaned).strip("-") or "GPU"


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_bytes: int
    max_sm_clock_mhz: Optional[int] = None
    max_memory_clock_mhz: Optional[int] = None
    power_limit_w: Optional[float] = None
    pcie_generation: Optional[int] = None
    pcie_width: Optional[int] = None
    nvlink_links_active: int = 0
    nvlink_links_total: int = 0
    nvlink_version: Optional[int] = None


@dataclass
class DeviceInfo:
    kind: str                                   # "cuda" | "cpu"
    name: str                                   # raw device name of device 0
    catalog_name: str
    count: int
    driver: Optional[str] = None
    cuda_driver_version: Optional[str] = None
    gpus: list[GpuInfo] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _text(value) -> str:
    # nvidia-ml-py returns bytes in old releases and str in new ones.
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu_info(pynvml, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def ask(fn, *args):
        # One query the driver does not support (MIG, a PCIe card asked about NVLink...) must not
        # sink the whole detection: record None and move on.
        try:
            return fn(handle, *args)
        except pynvml.NVMLError:
            return None

    power_mw = ask(pynvml.nvmlDeviceGetEnforcedPowerLimit) or ask(pynvml.nvmlDeviceGetPowerManagementLimit)
    active = total = 0
    version = None
    for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
        state = ask(pynvml.nvmlDeviceGetNvLinkState, link)
        if state is None:
            continue
        total += 1
        if state == getattr(pynvml, "NVML_FEATURE_ENABLED", 1):
            active += 1
            version = version or ask(pynvml.nvmlDeviceGetNvLinkVersion, link)
    return GpuInfo(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        max_sm_clock_mhz=ask(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        max_memory_clock_mhz=ask(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        power_limit_w=power_mw / 1000.0 if power_mw else None,
        pcie_generation=ask(pynvml.nvmlDeviceGetMaxPcieLinkGeneration),
        pcie_width=ask(pynvml.nvmlDeviceGetMaxPcieLinkWidth),
        nvlink_links_active=active,
        nvlink_links_total=total,
        nvlink_version=version,
    )


def detect_gpus(max_gpus: Optional[int] = None) -> DeviceInfo:
    """Describe the visible NVIDIA GPUs through NVML. Raises ProfilerError (one line) when pynvml is
    missing or no driver/GPU answers."""
    try:
        import pynvml
    except ImportError:
        raise ProfilerError("pynvml is not installed (pip install nvidia-ml-py); "
                            "to profile the CPU instead use --device cpu") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        raise ProfilerError(f"no NVIDIA GPU or driver found (NVML: {exc}); "
                            "to profile the CPU instead use --device cpu") from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise ProfilerError("NVML sees no GPU; to profile the CPU instead use --device cpu")
        indices = _visible_indices(count)
        if max_gpus is not None:
            indices = indices[:max_gpus]
        gpus = [_gpu_info(pynvml, i) for i in indices]
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return DeviceInfo(
            kind="cuda",
            name=gpus[0].name,
            catalog_name=catalog_name(gpus[0].name),
            count=len(gpus),
            driver=_text(pynvml.nvmlSystemGetDriverVersion()),
            cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
            gpus=gpus,
        )
    except pynvml.NVMLError as exc:
        raise ProfilerError(f"NVML query failed: {exc}") from None
    finally:
        pynvml.nvmlShutdown()


def _visible_indices(count: int) -> list[int]:
    """NVML ignores CUDA_VISIBLE_DEVICES; honour it when it is a plain list of indices so the
    detected GPUs are the ones torch will use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", visible):
        return list(range(count))
    return [int(v) for v in visible.split(",") if int(v) < count]


def detect_cpu() -> DeviceInfo:
    name = platform.processor() or platform.machine() or "cpu"
    return DeviceInfo(kind="cpu", name=name, catalog_name="CPU", count=1)


def detect(device: str, max_gpus: Optional[int] = None) -> DeviceInfo:
    if device == "cpu":
        return detect_cpu()
    if device == "cuda":
        return detect_gpus(max_gpus)
    raise ProfilerError(f"unknown device {device!r}: use cuda or cpu")
