"""The bounds dacli promises, one constant each: the tests assert these names and the docs quote them
(README "Precision", docs/PERFORMANCE.md). Measured with ``python benchmarks/precision_bounds.py``.

fp32 promises results that do not depend on how the work is cut: codes equal a one-pass encode
(whatever the window size and whatever shares the rows of a call), and decoded 16-bit audio is the same
whatever the window size. The other precisions promise bounds per CPU class: whether the CPU computes
bfloat16 natively (AVX-512 BF16 or AMX) decides how bfloat16 kernels round.
"""

from typing import Dict, Tuple

STEP = 2 ** -15  # one step of 16-bit audio

# fp32, on every CPU
FP32_CODES_MOVED = 0.0       # share of codes that differ from a one-pass encode, or between window sizes
FP32_AUDIO_MOVED = 0.0       # largest difference of decoded 16-bit audio between two window sizes
FP32_ONE_PASS_AUDIO = STEP   # largest difference of a windowed float decode from a one-pass decode (3e-7 measured)
FP32_OFFICIAL = 1e-5         # official-tool files against the official decoder's output (9.7e-7 measured)

# (share of codes that differ between 1 s and 7 s encode windows, largest decoded 16-bit difference, largest
# distance of official-tool files from the official decoder's output), per precision and native bfloat16.
# Measured on the bundled model, 10 s of tests/fixtures/music20s.flac: native: Intel Xeon family 6 model 207
# (AMX); not native: AMD EPYC family 25 model 1 (AVX2).
WINDOW_BOUNDS: Dict[Tuple[str, bool], Tuple[float, float, float]] = {
    ("fp32", True): (FP32_CODES_MOVED, FP32_AUDIO_MOVED, FP32_OFFICIAL),
    ("fp32", False): (FP32_CODES_MOVED, FP32_AUDIO_MOVED, FP32_OFFICIAL),
    # mixed: 1.35 % of codes, 0.048 and 5e-3 (20 s of speech) on the Xeon; 1.5-1.7 %, 0.098 and 9.1e-3 on the EPYC
    ("mixed", True): (0.025, 0.10, 1e-2),
    ("mixed", False): (0.025, 0.15, 2e-2),
    # bf16: not yet measured on a native CPU (the bound is mixed's, widened); 0 codes, 0.0, 1.0e-2 on the EPYC
    ("bf16", True): (0.05, 0.20, 3e-2),
    ("bf16", False): (0.001, STEP, 2e-2),
}

# mixed against fp32, decoding the same codes (the quality rule that lets auto pick mixed where bfloat16
# is native): mel distance, SI-SDR (dB), ViSQOL
MIXED_QUALITY = {"mel": 0.01, "sisdr": 0.1, "visqol": 0.02}

# Streaming (dacli.stream): the largest difference of streamed float audio from the same streamable model's
# one-pass decode, whatever the pushes, per precision and native bfloat16. fp32: exact on every CPU. Measured
# on the bundled model, 2 s and 6 s of tests/fixtures/music20s.flac, one-frame, two-frame and random pushes:
# 0 in mixed and bf16 on the AMD EPYC family 25 model 1 (AVX2, bfloat16 emulated); at most 8.5e-4 in mixed
# and 2.0e-3 in bf16 on the Intel Xeon family 6 model 167 (AMX), the same for every split tried.
STREAM_BOUNDS: Dict[Tuple[str, bool], float] = {
    ("fp32", True): 0.0, ("fp32", False): 0.0,
    ("mixed", True): 5e-3, ("mixed", False): 0.0,
    ("bf16", True): 1e-2, ("bf16", False): 0.0,
}
