"""Peak memory of file-to-file encode and decode against the length of the input.

    python benchmarks/memory.py [--minutes 1 1 1 60] [--channels 2] [--precision fp32]

Generates a stereo 44.1 kHz file of each length (a real recording looped), then encodes and decodes
it with the full-size 44khz preset (random weights: memory and speed do not depend on weight values),
each phase in a fresh process, and prints peak RSS. Target: ≤ 1.5 GB, and the longest input's peak
no more than 10% above the shortest's (memory bounded by the window, not the file). A length given several
times runs several times: glibc's heap settles into one of two layouts at random (about 0.9 and
1.3 GB for the same file), so the shortest length's runs show that spread.
"""

import argparse
import tempfile
from pathlib import Path

from dacli import bench

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 1.0, 1.0, 60.0])
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--window-seconds", type=float, default=None)
    ap.add_argument("--source", default=str(ROOT / "tests" / "fixtures" / "music20s.flac"))
    args = ap.parse_args()
    kw = {"precision": args.precision, "device": "cpu"}
    if args.window_seconds:
        kw["window_seconds"] = args.window_seconds
    print(f"machine: {bench.describe_machine(bench.machine())}", flush=True)
    runs = []  # (minutes, encode peak, decode peak)
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            src = bench.test_audio(tmp / "in.wav", minutes * 60, args.channels, args.source)
            enc = bench.run_phase("encode", "44khz-8kbps", src, tmp / "x.dac", **kw)
            dec = bench.run_phase("decode", "44khz-8kbps", tmp / "x.dac", tmp / "y.wav", **kw)
        runs.append((minutes, enc["peak_rss_mib"], dec["peak_rss_mib"]))
        print(f"{minutes:g} min × {args.channels} ch: encode {enc['seconds']:.0f} s, peak RSS "
              f"{enc['peak_rss_mib']:.0f} MiB; decode {dec['seconds']:.0f} s, peak RSS {dec['peak_rss_mib']:.0f} MiB",
              flush=True)
    lo, hi = min(r[0] for r in runs), max(r[0] for r in runs)
    for i, k in ((1, "encode"), (2, "decode")):
        short = [r[i] for r in runs if r[0] == lo]
        long_ = max(r[i] for r in runs if r[0] == hi)
        ratio = long_ / max(short)
        print(f"{k}: peak for {hi:g} min = {ratio:.3f} × the highest of {len(short)} run(s) for {lo:g} min "
              f"({min(short):.0f}–{max(short):.0f} MiB; {'at most' if ratio <= 1.10 else 'MORE than'} 10% above), "
              f"{'≤' if max(r[i] for r in runs) <= 1536 else '>'} 1.5 GiB")


if __name__ == "__main__":
    main()
