"""What the machine offers: the device to run on, the CPU's features, and which precision runs."""

from ..errors import DacliError

# Whether --precision auto picks bf16 on hardware that computes it natively. Only if its quality cost is
# negligible on the held-out set (bundled model, 7.75 kbps: mel within 0.01, ViSQOL within 0.02,
# SI-SDR within 0.1 dB of fp32); see the README's Speed section for the measurement.
AUTO_BF16 = False


def cpu_info() -> dict:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "flags", ...);
    empty where there is no such file."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> set:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    return set(cpu_info().get("flags", "").split())


def resolve_device(device="auto"):
    """A torch.device for "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"."""
    import torch
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DacliError("CUDA was requested but is not available on this machine")
    return torch.device(device)


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX (elsewhere bf16 is emulated, slower than fp32)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision, device) -> str:
    """"fp32" or "bf16" for a requested precision ("auto", "fp32", "bf16") on ``device``."""
    if precision not in ("auto", "fp32", "bf16"):
        raise DacliError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        return "bf16" if AUTO_BF16 and native_bf16(device) else "fp32"
    return precision
