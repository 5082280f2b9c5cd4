"""What ``dacli.tune_process()`` is worth: file-to-file encode and decode with and without it.

    python benchmarks/process_settings.py [--model 44khz-8kbps] [--seconds 30] [--channels 2]
                                          [--precision fp32] [--runs 2]

The command line applies these process settings itself (glibc's heap kept for reuse); a program that
uses dacli as a library gets them only by calling ``dacli.tune_process()`` first. Each run is a fresh
process that loads the model (default: the full-size 44.1 kHz architecture with random weights, speed
does not depend on them), encodes a file of real music looped and decodes it: with the settings
(``tuned``), without (``plain``), or with them and libgomp's spin shortened to 1,000 rounds
(``short-spin``, ``GOMP_SPINCOUNT=1000``, which ``tune_process`` does not set: this shows why). The
kinds take turns; GOMP_SPINCOUNT is removed from the environment of the others. Prints the CPU, each
run's seconds, each kind's time against the tuned one, and whether all gave the same codes and audio
(they must: the settings change speed, not results).
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


KINDS = ("tuned", "plain", "short-spin")


def child(kind, src, tmp, precision, name):
    if kind != "plain":
        import dacli
        dacli.tune_process()  # before torch is imported, as the command line does
    from dacli import bench, codec
    model = bench.make_model(name, "cpu", precision, tune=False)
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
    ap.add_argument("--model", default="44khz-8kbps")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.precision, args.model)
    from dacli import bench
    print(f"machine: {bench.describe_machine(bench.machine())}", flush=True)
    results: dict = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        src = bench.test_audio(Path(tmp) / "in.wav", args.seconds, args.channels,
                               ROOT / "tests" / "fixtures" / "music20s.flac")
        for run in range(args.runs):
            for kind in (KINDS if run % 2 == 0 else KINDS[::-1]):
                env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
                if kind == "short-spin":
                    env["GOMP_SPINCOUNT"] = "1000"
                out = subprocess.run([sys.executable, __file__, "--model", args.model, "--precision", args.precision,
                                      "--child", kind, str(src), tmp], capture_output=True, text=True, env=env)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[kind].append(r)
                print(f"{kind:10s}: encode {r['encode']:.2f} s, decode {r['decode']:.2f} s "
                      f"({args.model}, {args.seconds:g} s × {args.channels} ch, {args.precision})", flush=True)
    same = len({(r["x.dac"], r["y.wav"]) for rs in results.values() for r in rs}) == 1
    for phase in ("encode", "decode"):
        best = {kind: min(r[phase] for r in results[kind]) for kind in KINDS}
        print(f"{phase}: best of {args.runs}: " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()) + ": " +
              ", ".join(f"{k} takes {best[k] / best['tuned']:.2f}x the tuned time" for k in KINDS[1:]))
    print(f"codes and audio identical in every run: {same}")


if __name__ == "__main__":
    main()
