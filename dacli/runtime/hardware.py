"""What the machine offers: the device to run on, the CPU's features, and which precision runs."""

from ..errors import DacliError

# The precisions inference runs in: "fp32"; "bf16" (every convolution and Snake in bfloat16);
# "mixed" (bfloat16 except the decoder's last, full-rate blocks and the encoder's narrow first layers:
# see dacli.runtime.engine).
PRECISIONS = ("fp32", "mixed", "bf16")
# What --precision auto runs where the device computes bfloat16 natively (fp32 elsewhere): bf16 only
# where its quality cost is negligible on the held-out set (bundled model, 7.75 kbps: mel within 0.01,
# ViSQOL within 0.02, SI-SDR within 0.1 dB of fp32). All-bf16 misses that (mel +0.17); "mixed" meets
# it. The measurements: docs/PERFORMANCE.md, "Precision"; tests/test_precision.py holds the rule.
AUTO_NATIVE = "mixed"


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
    """One of :data:`PRECISIONS` for a requested precision ("auto" or one of them) on ``device``."""
    if precision not in ("auto", *PRECISIONS):
        raise DacliError(f"precision must be auto, {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return AUTO_NATIVE if native_bf16(device) else "fp32"
    return precision
