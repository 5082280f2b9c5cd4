"""Which of the encoder's first layers "mixed" precision should keep in float32: the time of one
file-to-file encode in a fresh process (as `dacli encode` runs it) and of a second, 7 % shorter file in
that process (as a folder is encoded: the last window has a new length), for float32 and for "mixed"
with the encoder's layers of up to N channels in float32 (``FLOAT32_ENCODER_MAX_CHANNELS``; 0: the
whole encoder in bfloat16, as before 2026-11-27).

    python benchmarks/encoder_split.py [--model dacli-44khz] [--input FILE] [--seconds 10 60 240] [--rounds 2]
                                       [--max-channels 0 16 32 64]

On CPUs with AMX, oneDNN takes 60-100 ms to set up a bfloat16 convolution for each new input length
of the encoder's full-rate, 16-channel layers (`ONEDNN_VERBOSE=2` shows it as create:cache_miss);
a file meets three or four lengths (first, steady, last windows). Run with training paused.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import bench  # noqa: E402


def child(model_name, precision, max_channels, src, src2):
    """In this (fresh) process: the encode of ``src``, then of ``src2`` → seconds."""
    from dacli import codec
    from dacli.runtime import engine
    if max_channels is not None:
        engine.FLOAT32_ENCODER_MAX_CHANNELS = max_channels
    model = bench.make_model(model_name, "cpu", precision)  # an official preset: random weights
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in (src, src2):
            t = time.perf_counter()
            codec.encode_file(model, path, Path(tmp) / "x.dac", None, None)
            times.append(time.perf_counter() - t)
    return {"first": times[0], "next": times[1]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dacli-44khz")
    ap.add_argument("--input", default="tests/fixtures/music20s.flac", help="a recording, looped to length")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 240.0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-channels", type=int, nargs="+", default=[0, 16, 32, 64],
                    help="values of FLOAT32_ENCODER_MAX_CHANNELS to try")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        model_name, precision, max_channels, src, src2 = args.child
        print(json.dumps(child(model_name, precision, None if max_channels == "-" else int(max_channels), src, src2)))
        return
    m = bench.machine()
    print(bench.describe_machine(m))
    x, sr = sf.read(args.input, dtype="float32", always_2d=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            n = int(seconds * sr)
            src = str(Path(tmp) / f"in{seconds:g}.wav")
            src2 = str(Path(tmp) / f"in{seconds:g}b.wav")
            sf.write(src, np.resize(x[:, 0], n), sr)
            sf.write(src2, np.resize(x[:, 0], int(0.93 * n)), sr)
            variants = [("fp32", None)] + [("mixed", k) for k in args.max_channels]
            times = {v: [] for v in variants}
            for _ in range(args.rounds):  # interleaved, so drift in the machine's speed hits all alike
                for precision, max_channels in variants:
                    cmd = [sys.executable, __file__, "--child", args.model, precision,
                           "-" if max_channels is None else str(max_channels), src, src2]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
                    times[(precision, max_channels)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            base = np.mean([t["first"] for t in times[("fp32", None)]])
            print(f"\n{seconds:g} s of audio, mean of {args.rounds} fresh processes each:")
            print(f"  {'variant':28s} {'first file':>11s} {'x real time':>12s} {'vs fp32':>8s}"
                  f" {'next file':>10s} {'x real time':>12s}")
            for (precision, max_channels), ts in times.items():
                first = np.mean([t["first"] for t in ts])
                nxt = np.mean([t["next"] for t in ts])
                label = "fp32" if max_channels is None else f"mixed, fp32 up to {max_channels} channels"
                print(f"  {label:28s} {first:10.2f}s {seconds / first:11.1f}x {base / first:7.2f}x"
                      f" {nxt:9.2f}s {0.93 * seconds / nxt:11.1f}x")
                results.append({"seconds": seconds, "precision": precision, "fp32_max_channels": max_channels,
                                 "first_s": [t["first"] for t in ts], "next_s": [t["next"] for t in ts]})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "model": args.model, "results": results}, indent=1))


if __name__ == "__main__":
    main()
