"""What each precision promises, measured: how much the codes and the decoded audio move with the window
size, and how far official-tool files decode from the official decoder's output.

    python benchmarks/precision_bounds.py [--model dacli-44khz] [--input FILE] [--precision fp32 mixed bf16]

For each precision: the input (default tests/fixtures/music20s.flac) is encoded through
``codec.encode_file`` with 1 s and with 7 s windows; printed are the share of codes that differ, and,
decoding each file with the default window, the share of 16-bit samples that differ by more than one
step and the largest difference. Then every official-tool fixture (tests/fixtures/*.dac of the tiny
reference models) is decoded and compared with the official decoder's output (its .npy beside it).
Prints the CPU (model, family, the flags that decide bf16) first; one JSON line per precision with
--json.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from dacli import bench, codec, legacy, load_model

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def window_dependence(model, src, tmp):
    """(share of codes that differ, share of samples more than one 16-bit step apart, largest difference
    as a float) between 1 s and 7 s encode windows."""
    out = {}
    for w in (1.0, 7.0):
        codec.encode_file(model, src, tmp / f"{w}.dac", window_seconds=w)
        codec.decode_file(model, tmp / f"{w}.dac", tmp / f"{w}.wav")
        out[w] = (codec.container.read(tmp / f"{w}.dac")[1], sf.read(tmp / f"{w}.wav", dtype="int16")[0])
    (ca, ya), (cb, yb) = out[1.0], out[7.0]
    diff = np.abs(ya.astype(np.int64) - yb)
    return float((ca != cb).mean()), float((diff > 1).mean()), float(diff.max() / 32768)


def official_distance(precision):
    """Largest absolute difference from the official decoder's output over the legacy fixtures."""
    worst = 0.0
    models = {}
    for f in sorted(FIXTURES.glob("tiny*.dac")):
        name = "tiny44.pth" if f.name.startswith("tiny44") else "tiny24.pth"
        if name not in models:
            models[name] = load_model(FIXTURES / name, "cpu", precision)
        y = legacy.decode(models[name], legacy.read(f))
        ref = np.load(f.with_name(f.stem + "_decompressed.npy"))
        worst = max(worst, float(np.abs(y.T - ref).max()))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dacli-44khz")
    ap.add_argument("--input", default=str(FIXTURES / "music20s.flac"))
    ap.add_argument("--precision", nargs="+", default=["fp32", "mixed", "bf16"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    print(bench.describe_machine(bench.machine()), flush=True)
    for precision in args.precision:
        model = load_model(args.model, "cpu", precision)
        with tempfile.TemporaryDirectory() as tmp:
            codes, samples, largest = window_dependence(model, Path(args.input), Path(tmp))
        row = {"precision": precision, "model": model.name, "codes_differ": codes, "samples_over_one_step": samples,
               "max_difference": largest, "official_max_difference": official_distance(precision)}
        print(json.dumps(row) if args.json else
              f"{precision:>6}: 1 s vs 7 s windows: {100 * codes:.3f} % of codes differ, {100 * samples:.2f} % of "
              f"samples more than one 16-bit step apart (largest {largest:.2e}); official files: within "
              f"{row['official_max_difference']:.1e} of the official decoder", flush=True)


if __name__ == "__main__":
    main()
