"""Which device a job runs on, at which precision, and the device's peak FLOP/s for MFU.

The peak table holds dense (no 2:4 sparsity) tensor-core numbers from the vendors' datasheets.
A device not in the table gets ``None``: MFU is then reported as null, never guessed.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

import torch

from ablate import heap
from ablate.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ablate.config import HardwareConfig

# Dense peak FLOP/s for 16-bit (bf16, or fp16 where the chip has no bf16) tensor-core math.
# Matched by substring of torch.cuda.get_device_name(), first match wins (order matters:
# "A100" before "A10", "H100 PCIe"/"H100 NVL" before "H100").
PEAK_FLOPS_16BIT: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),  # H200 SXM: same tensor cores as H100 SXM
    ("GH200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989e12),
    ("A100", 312e12),  # SXM and PCIe
    ("A800", 312e12),
    # A10G (AWS g5) is not in NVIDIA's datasheets; GA102 consumer-style half-rate fp32-accumulate
    # tensor math gives ~70 TFLOP/s, and measured large bf16 matmuls reach 69.5 TFLOP/s, so the
    # A10's 125e12 would understate MFU by almost 2x.
    ("A10G", 70e12),
    ("A10", 125e12),  # A10 datasheet: 125 dense (250 with sparsity)
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),  # L4 datasheet: 242 with sparsity -> 121 dense
    ("V100", 125e12),  # fp16 (V100 has no bf16); SXM2 number, PCIe is 112e12
)

# Dense TF32 tensor-core peaks, used when a CUDA job trains in fp32 with TF32 allowed.
PEAK_FLOPS_TF32: tuple[tuple[str, float], ...] = (
    ("H200", 494.5e12),
    ("H100 PCIe", 378e12),
    ("H100", 494.5e12),
    ("A100", 156e12),
    ("A10G", 35e12),
    ("A10", 62.5e12),
    ("L4", 60e12),
)


def _lookup(table: tuple[tuple[str, float], ...], name: str) -> float | None:
    for key, value in table:
        if key.lower() in name.lower():
            return value
    return None


def peak_flops(device_name: str, precision: str, tf32: bool = True) -> float | None:
    """Peak FLOP/s of one device for the precision trained in; None when unknown (CPU too)."""
    if not device_name or device_name.lower().startswith("cpu"):
        return None
    if precision in ("bf16", "fp16"):
        return _lookup(PEAK_FLOPS_16BIT, device_name)
    if precision == "fp32" and tf32:
        return _lookup(PEAK_FLOPS_TF32, device_name)
    return None


def cpu_name() -> str:
    """A readable CPU model name (``/proc/cpuinfo``'s model name where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return "cpu (" + line.split(":", 1)[1].strip() + ")"
    except OSError:
        pass
    return f"cpu ({platform.processor() or platform.machine() or 'unknown'})"


class SdpaProbe(TypedDict):
    """``probe_sdpa``'s answer (env.json's ``sdpa``)."""

    enabled: list[str]
    flash: bool
    flash_error: str | None


@dataclass
class DeviceSetup:
    """The device a rank trains on and the numerics it trains with."""

    device: torch.device
    name: str  # real device name ("NVIDIA H100 80GB HBM3", "cpu (AMD EPYC ...)")
    precision: str  # "bf16" | "fp32"
    tf32: bool
    compile: bool
    warnings: list[str]
    sdpa: SdpaProbe | None = None  # see probe_sdpa

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context for forward passes (training and eval alike)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def peak_flops(self) -> float | None:
        return peak_flops(self.name, self.precision, self.tf32)

    def peak_memory_mb(self) -> float | None:
        if not self.is_cuda:
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


def setup_device(hw: HardwareConfig, local_rank: int) -> DeviceSetup:
    """Resolve hardware.device / precision / tf32 / compile / threads for this rank.

    ``hw`` is the RunConfig's ``hardware`` (a HardwareConfig, its values validated by
    ablate.config). Raises ConfigError for requests this machine cannot meet (cuda asked for
    where there is none, bf16 on a device without it).
    """
    warnings: list[str] = []
    want = hw.device
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        raise ConfigError(
            "hardware.device=cuda but torch sees no CUDA device on this machine; "
            "use hardware=cpu (hardware.device=cpu) or run where a GPU is visible"
        )
    use_cuda = has_cuda and want in ("auto", "cuda")
    if not use_cuda:  # a CPU step frees and re-allocates its logits every iteration (ablate.heap)
        heap.reuse_freed_memory()
    if hw.threads is not None:
        torch.set_num_threads(hw.threads)

    if use_cuda:
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ConfigError(
                f"local rank {local_rank} has no GPU: only {n} visible; start at most {n} processes per node "
                f"(hardware.nproc_per_node) or make more GPUs visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    else:
        device = torch.device("cpu")
        name = cpu_name()

    precision = (
        hw.precision.value
    )  # what this rank trains in, as summary.json says it: "bf16" | "fp32"
    if precision == "auto":
        if use_cuda:
            if torch.cuda.is_bf16_supported():
                precision = "bf16"
            else:
                precision = "fp32"
                warnings.append(f"{name} has no bf16 support; training in fp32")
        else:
            precision = "fp32"
    elif precision == "bf16" and use_cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"hardware.precision=bf16 but {name} does not support bf16; use hardware.precision=fp32"
        )

    tf32 = hw.tf32 and use_cuda
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        # Flash / memory-efficient SDPA kernels (the models call F.scaled_dot_product_attention).
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)

    # compile works on CPU too (inductor's C++ backend); whether it really ran is decided by the
    # trainer's compile probe (ablate.train.compile), which may fall back to eager and say so.
    return DeviceSetup(
        device=device,
        name=name,
        precision=precision,
        tf32=tf32,
        compile=hw.compile,
        warnings=warnings,
    )


def probe_sdpa(dev: DeviceSetup, n_head: int, head_dim: int) -> SdpaProbe:
    """Which scaled_dot_product_attention kernels are enabled, and whether the flash kernel can
    run at the job's dtype and head dim on this device (one tiny causal call restricted to it).

    Returns ``{"enabled": [...], "flash": bool, "flash_error": str | None}``. SDPA picks flash
    first where it can, so ``flash: false`` means attention silently takes a slower kernel; the
    trainer logs that as a warning.
    """
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b = torch.backends.cuda
    # torch leaves the *_sdp_enabled() functions unannotated; each returns a bool.
    enabled = [
        name
        for name, on in (
            ("flash", cast("Callable[[], bool]", b.flash_sdp_enabled)()),
            ("mem_efficient", cast("Callable[[], bool]", b.mem_efficient_sdp_enabled)()),
            ("cudnn", cast("Callable[[], bool]", b.cudnn_sdp_enabled)()),
            ("math", cast("Callable[[], bool]", b.math_sdp_enabled)()),
        )
        if on
    ]
    dtype = dev.autocast_dtype or torch.float32
    q = torch.zeros(1, n_head, 16, head_dim, device=dev.device, dtype=dtype)
    error: str | None = None
    if "flash" not in enabled:
        error = "the flash kernel is disabled (torch.backends.cuda.enable_flash_sdp(False))"
    else:
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                F.scaled_dot_product_attention(q, q, q, is_causal=True, scale=head_dim**-0.5)
        except RuntimeError as e:
            error = " ".join(str(e).split())[:300]
    return {"enabled": enabled, "flash": error is None, "flash_error": error}
