"""What ``dacli.tune_process()`` is worth: file-to-file encode and decode with and without it.

    python benchmarks/process_settings.py [--seconds 30] [--channels 2] [--precision fp32] [--runs 2]

The command line applies these process settings itself (a short OpenMP spin, glibc's heap kept for
reuse); a program that uses dacli as a library gets them only by calling ``dacli.tune_process()``
first. Each run is a fresh process that loads the full-size 44.1 kHz architecture (random weights:
speed does not depend on them), encodes a file of real music looped and decodes it, with the settings
(``tuned``) or without (``plain``, GOMP_SPINCOUNT removed from its environment); the two kinds take
turns. Prints the CPU, each run's seconds, the ratio plain / tuned, and whether both gave the same
codes and audio (they must: the settings change speed, not results).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(kind, src, tmp, precision):
    if kind == "tuned":
        import dacli
        dacli.tune_process()  # before torch is imported, as the command line does
    import torch

    from dacli import codec, runtime
    from dacli.model import build
    torch.manual_seed(0)
    model = runtime.prepare(build("44khz-8kbps"), "cpu", precision)
    model.weights_hash = "0" * 64
    t = time.perf_counter()
    codec.encode_file(model, src, Path(tmp) / "x.dac")
    enc = time.perf_counter() - t
    t = time.perf_counter()
    codec.decode_file(model, Path(tmp) / "x.dac", Path(tmp) / "y.wav")
    dec = time.perf_counter() - t
    digest = {f: hashlib.sha256((Path(tmp) / f).read_bytes()).hexdigest()[:16] for f in ("x.dac", "y.wav")}
    print(json.dumps({"encode": enc, "decode": dec, **digest}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.precision)
    from dacli import bench
    print(f"machine: {bench.describe_machine(bench.machine())}", flush=True)
    results = {"tuned": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        src = bench.test_audio(Path(tmp) / "in.wav", args.seconds, args.channels,
                               ROOT / "tests" / "fixtures" / "music20s.flac")
        for run in range(args.runs):
            for kind in (("tuned", "plain") if run % 2 == 0 else ("plain", "tuned")):
                env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
                out = subprocess.run([sys.executable, __file__, "--precision", args.precision, "--child", kind,
                                      str(src), tmp], capture_output=True, text=True, env=env)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[kind].append(r)
                print(f"{kind:5s}: encode {r['encode']:.2f} s, decode {r['decode']:.2f} s "
                      f"({args.seconds:g} s × {args.channels} ch, {args.precision})", flush=True)
    same = len({(r["x.dac"], r["y.wav"]) for rs in results.values() for r in rs}) == 1
    for phase in ("encode", "decode"):
        tuned = min(r[phase] for r in results["tuned"])
        plain = min(r[phase] for r in results["plain"])
        print(f"{phase}: best of {args.runs}: tuned {tuned:.2f} s, plain {plain:.2f} s: "
              f"plain takes {plain / tuned:.2f}× the tuned time")
    print(f"codes and audio identical with and without: {same}")


if __name__ == "__main__":
    main()
