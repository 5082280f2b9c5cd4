"""Encode and decode speed of dacli against the official implementation, same machine, same run.

    python benchmarks/speed.py [--seconds 60] [--precision fp32 mixed bf16] [--official-venv DIR] [--onnx]
    python benchmarks/speed.py --onnx-gap --seconds 20

Times file-to-file encode and decode of the same real recording (tests/fixtures/music20s.flac looped
to --seconds) with the full-size 44khz preset (random weights) for dacli and, when the official package
is installed in its own venv (benchmarks/install_official.sh), for the official
compress/decompress with its CLI's 5 s window. Prints real-time factors, the dacli/official ratios,
peak RSS and GFLOP/s, and for mixed and bf16 the SNR against the fp32 decode and the share of codes
equal to fp32's. --onnx: also the graphs of ``dacli export`` run by onnxruntime (``--runtime onnx``)
against the torch runtime in fp32: decoding the same .dac file to WAV, and a one-pass encode of the
same audio. --onnx-gap: only how far the ONNX decode of the bundled model is from the torch decode in
fp32 and in mixed (16-bit steps), for what the README says of it.
Run it on an idle machine: other load changes the figures.
"""

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from dacli import bench, windows

ROOT = Path(__file__).resolve().parent.parent


def official(venv, src, tmp):
    py = Path(venv) / "bin" / "python"
    out = {}
    for kind, a, b in (("encode", src, tmp / "o.dac"), ("decode", tmp / "o.dac", tmp / "o.wav")):
        r = subprocess.run([str(py), str(ROOT / "benchmarks" / "official_phase.py"), kind, str(a), str(b)],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"official {kind} failed:\n{r.stderr[-3000:]}")
        out[kind] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def quality_vs_fp32(source, precision, seconds=10.0):
    """(SNR dB of the decode in ``precision`` against fp32, share of its codes equal to fp32's) on
    real audio."""
    x, sr = sf.read(str(source), dtype="float32")
    x = x[:int(seconds * sr)][None]
    m = bench.make_model("44khz-8kbps", "cpu", "fp32")
    c32 = windows.encode_array(m, x)
    y32 = windows.decode_array(m, c32)
    m = bench.make_model("44khz-8kbps", "cpu", precision)  # the same random weights (seed 0)
    c16 = windows.encode_array(m, x)
    y16 = windows.decode_array(m, c32)
    snr = 10 * np.log10((y32 ** 2).sum() / ((y32 - y16) ** 2).sum())
    return float(snr), float((c16 == c32).mean())


def onnx_vs_torch(src, tmp, seconds):
    """Seconds to decode one .dac file to WAV (the push loop, file to file) and to encode the audio in one
    pass, with onnxruntime and with the torch runtime in fp32, the same random full-size weights."""
    import time

    import torch

    from dacli import codec
    from dacli.export import export_graphs
    from dacli.model import build
    from dacli.onnx_model import OnnxDAC
    torch.manual_seed(0)
    plain = build("44khz-8kbps")
    plain.weights_hash = "0" * 64
    (tmp / "onnx").mkdir()
    export_graphs(plain, tmp / "onnx")
    models = {"torch": bench.make_model("44khz-8kbps", "cpu", "fp32"), "onnx": OnnxDAC(tmp / "onnx")}
    codec.encode_file(models["torch"], src, tmp / "x.dac")
    x = sf.read(str(src), dtype="float32", always_2d=True)[0].T
    out = {}
    for name, m in models.items():
        codec.decode_file(m, tmp / "x.dac", tmp / f"{name}.wav")  # warm-up (graph load, first calls)
        t = time.perf_counter()
        codec.decode_file(m, tmp / "x.dac", tmp / f"{name}.wav")
        dec = time.perf_counter() - t
        t = time.perf_counter()
        m.encode(x[:, :int(10 * 44100)])
        enc = time.perf_counter() - t
        out[name] = {"decode_seconds": dec, "decode_rt": seconds / dec, "encode10_seconds": enc}
    a, _ = sf.read(str(tmp / "torch.wav"), dtype="int16")
    b, _ = sf.read(str(tmp / "onnx.wav"), dtype="int16")
    out["max_16bit_difference"] = int(np.abs(a.astype(int) - b).max())
    return out


def onnx_gap(src, tmp):
    """How far the ONNX decode of the bundled model is from the torch decode in each precision, in
    16-bit steps (largest difference over the file): the same .dac file (encoded in fp32), decoded by
    onnxruntime (always fp32) and by torch in fp32, mixed and the default of this CPU."""
    from dacli import codec, registry
    from dacli.export import export
    from dacli.onnx_model import OnnxDAC
    from dacli.runtime.hardware import resolve_precision
    export(registry.DEFAULT_MODEL, tmp / "bundled-onnx", True)
    codec.encode_file(registry.load_model(None, "cpu", "fp32"), src, tmp / "b.dac")
    codec.decode_file(OnnxDAC(tmp / "bundled-onnx"), tmp / "b.dac", tmp / "b-onnx.wav")
    ref = sf.read(str(tmp / "b-onnx.wav"), dtype="int16")[0].astype(int)
    out = {"default": resolve_precision("auto", "cpu")}
    for prec in ("fp32", "mixed"):
        codec.decode_file(registry.load_model(None, "cpu", prec), tmp / "b.dac", tmp / f"b-{prec}.wav")
        out[prec] = int(np.abs(sf.read(str(tmp / f"b-{prec}.wav"), dtype="int16")[0].astype(int) - ref).max())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--precision", nargs="+", default=["fp32", "mixed", "bf16"])
    ap.add_argument("--source", default=str(ROOT / "tests" / "fixtures" / "music20s.flac"))
    ap.add_argument("--official-venv", default=os.environ.get("DACLI_OFFICIAL_VENV",
                                                              str(Path.home() / ".cache/dacli/official/venv")))
    ap.add_argument("--onnx", action="store_true", help="also onnxruntime against the torch runtime (fp32)")
    ap.add_argument("--onnx-gap", action="store_true", help="only how far the ONNX decode of the bundled model is "
                                                                "from the torch decode in fp32 and in mixed")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = {"machine": bench.machine()}
    print(f"machine: {bench.describe_machine(results['machine'])}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = bench.test_audio(tmp / "in.wav", args.seconds, 1, args.source)
        if args.onnx_gap:
            g = results["onnx_gap"] = onnx_gap(src, tmp)
            print(f"bundled model, {args.seconds:g} s: the ONNX decode is within {g['fp32']} 16-bit steps of torch in "
                  f"fp32 and {g['mixed']} of torch in mixed (this CPU's default: {g['default']})", flush=True)
            args.precision = []
        elif (Path(args.official_venv) / "bin" / "python").exists():
            off = official(args.official_venv, src, tmp)
            results["official"] = off
            print(f"official 1.0.0 (5 s windows): encode {off['encode']['seconds']:.2f} s "
                  f"({args.seconds / off['encode']['seconds']:.2f}× real time, {off['encode']['peak_rss_mib']:.0f} MiB), "
                  f"decode {off['decode']['seconds']:.2f} s ({args.seconds / off['decode']['seconds']:.2f}× real time, "
                  f"{off['decode']['peak_rss_mib']:.0f} MiB)", flush=True)
        else:
            off = None
            print(f"official package not found in {args.official_venv}: dacli only", flush=True)
        for prec in args.precision:
            r = bench.bench("44khz-8kbps", args.source, args.seconds, 1, "cpu", prec)
            results[prec] = r
            print(bench.report(r), flush=True)
            if off:
                r["encode_speedup"] = off["encode"]["seconds"] / r["encode_seconds"]
                r["decode_speedup"] = off["decode"]["seconds"] / r["decode_seconds"]
                print(f"  dacli/official speed: encode {r['encode_speedup']:.2f}×, decode {r['decode_speedup']:.2f}×",
                      flush=True)
            if prec != "fp32":
                snr, equal = quality_vs_fp32(args.source, prec)
                r["snr_vs_fp32_db"], r["codes_equal_fp32"] = snr, equal
                print(f"  {prec} vs fp32: decode SNR {snr:.1f} dB, codes equal {100 * equal:.2f}%", flush=True)
        if args.onnx:
            o = onnx_vs_torch(src, tmp, args.seconds)
            results["onnx"] = o
            print(f"onnxruntime (dacli export, --runtime onnx) against torch, fp32: decode "
                  f"{o['onnx']['decode_seconds']:.2f} s vs {o['torch']['decode_seconds']:.2f} s "
                  f"({o['onnx']['decode_rt']:.2f}× vs {o['torch']['decode_rt']:.2f}× real time, torch/onnx speed "
                  f"{o['onnx']['decode_seconds'] / o['torch']['decode_seconds']:.2f}×); encode of 10 s in one pass "
                  f"{o['onnx']['encode10_seconds']:.2f} s vs {o['torch']['encode10_seconds']:.2f} s; decoded files "
                  f"within {o['max_16bit_difference']} 16-bit steps", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
