"""dacli on one CUDA GPU, in at most about 5 minutes: is it right, does memory stay flat, how fast.

    python benchmarks/gpu_check.py [--device cuda] [--model 44khz-8kbps] [--seconds 60] [--json OUT.json]

With the full-size 44.1 kHz model (random weights unless downloaded; speed and memory do not depend on
them) and 60 s of real music (tests/fixtures/music20s.flac looped):

1. codes made on the GPU (fp32 and ``auto``) against codes made on the CPU in fp32: % equal;
2. the CPU's fp32 codes decoded on the GPU against decoded on the CPU: SNR in dB;
3. peak CUDA memory of a file-to-file encode and decode of 1 and of 10 minutes (it must not grow
   with the length);
4. hours of audio per hour of encoding for several numbers of rows per call (windows per forward
   pass), and of decoding (the push loop, one file); and for 60 short clips (1-10 s) packed into
   shared rows (``dacli.windows.Packer``), with the share of their fp32 codes equal to each clip
   encoded alone (one pass) on the same GPU;
5. the official descript-audio-codec on the same GPU in the same run, where it is installed
   (``pip install descript-audio-codec``): its compress and decompress of the same 60 s.

Prints the GPU, the CPU and the versions first, each figure as it comes, and everything as JSON at
the end (to --json too). ``--device cpu`` runs the same steps on the CPU (a smoke test, slow).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dacli import bench, codec, windows

ROOT = Path(__file__).resolve().parent.parent


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_reset(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.device(device).type == "cuda" else None


def music(seconds, rate=44100):
    x, sr = sf.read(ROOT / "tests" / "fixtures" / "music20s.flac", dtype="float32")
    assert sr == rate
    return np.tile(x, int(np.ceil(seconds * rate / len(x))))[:int(seconds * rate)]


def correctness(name, device, x, out):
    cpu = bench.make_model(name, "cpu", "fp32")
    ref = windows.encode_array(cpu, x[None])
    ref_audio = windows.decode_array(cpu, ref)
    for precision in ("fp32", "auto"):
        gpu = bench.make_model(name, device, precision)
        codes = windows.encode_array(gpu, x[None])
        out[f"codes_equal_pct_{gpu.precision}"] = float(100 * (codes == ref).mean())
        y = windows.decode_array(gpu, ref)
        noise = float(((y - ref_audio) ** 2).mean())
        out[f"decoded_snr_db_{gpu.precision}"] = float(10 * np.log10((ref_audio ** 2).mean() / max(noise, 1e-30)))
        print(f"{gpu.precision}: codes {out[f'codes_equal_pct_{gpu.precision}']:.3f} % equal to CPU fp32; "
              f"decoded SNR {out[f'decoded_snr_db_{gpu.precision}']:.1f} dB against the CPU's decode", flush=True)


def memory(name, device, out, tmp):
    model = bench.make_model(name, device, "auto")
    for minutes in (1, 10):
        src = tmp / f"{minutes}.wav"
        sf.write(src, music(60 * minutes), 44100)
        peak_reset(device)
        codec.encode_file(model, src, tmp / f"{minutes}.dac")
        sync(device)
        enc = peak_mib(device)
        peak_reset(device)
        codec.decode_file(model, tmp / f"{minutes}.dac", tmp / f"{minutes}_out.wav")
        sync(device)
        out[f"peak_cuda_mib_{minutes}min"] = {"encode": enc, "decode": peak_mib(device)}
        print(f"{minutes} min: peak CUDA memory encode {enc} MiB, decode {peak_mib(device)} MiB", flush=True)


def throughput(name, device, x, out, rows_per_call):
    model = bench.make_model(name, device, "auto")
    seconds = len(x) / 44100
    codes = windows.encode_array(model, x[None])
    for _ in range(2):  # the first pass sets the shapes up; the second is timed
        sync(device)
        t = time.perf_counter()
        for _y in windows.decode_windows(model, codes):
            pass
        sync(device)
        t_dec = time.perf_counter() - t
    print(f"decode {seconds / t_dec:8.1f} hours of audio per hour", flush=True)
    results = []
    for rows in rows_per_call:
        for _ in range(2):
            sync(device)
            t = time.perf_counter()
            enc = windows.Packer(model, model.n_codebooks,
                                 windows.window_frames(model, None, windows.ENCODE_WINDOW_SECONDS), rows)
            enc.add(0, x[None])
            enc.flush()
            sync(device)
            t_enc = time.perf_counter() - t
        results.append({"rows": rows, "encode_hours_per_hour": seconds / t_enc})
        print(f"{rows:3d} rows per call: encode {seconds / t_enc:8.1f} hours of audio per hour", flush=True)
    out["throughput"] = {"decode_hours_per_hour": seconds / t_dec, "encode": results}


def packed(name, device, x, out, rows_per_call):
    """Short clips cut from ``x`` through the Packer, ``rows`` rows per call: hours per hour, and in
    fp32 the share of codes equal to each clip encoded alone."""
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(60):
        n = int(rng.uniform(1, 10) * 44100)
        at = int(rng.integers(0, len(x) - n))
        clips.append(x[None, at:at + n])
    seconds = sum(c.shape[1] for c in clips) / 44100
    results = []
    for precision in ("fp32", "auto"):
        model = bench.make_model(name, device, precision)
        alone = [model.encode(c).numpy() for c in clips] if precision == "fp32" else None
        width = windows.window_frames(model, None, windows.ENCODE_WINDOW_SECONDS)
        for rows in rows_per_call:
            for _ in range(2):  # the first pass sets the shape up; the second is timed
                p = windows.Packer(model, model.n_codebooks, width, rows)
                sync(device)
                t = time.perf_counter()
                got = {}
                for i, c in enumerate(clips):
                    got.update(p.add(i, c))
                got.update(p.flush())
                sync(device)
                t_enc = time.perf_counter() - t
            row = {"precision": model.precision, "rows": rows, "encode_hours_per_hour": seconds / t_enc}
            if alone is not None:
                row["codes_equal_pct"] = float(100 * np.mean([(got[i] == a).mean() for i, a in enumerate(alone)]))
            results.append(row)
            print(f"packed clips, {model.precision}, {rows:3d} rows per call: encode {seconds / t_enc:8.1f} hours per hour"
                  + (f", codes {row['codes_equal_pct']:.3f} % equal to each clip alone" if alone is not None else ""),
                  flush=True)
    out["packed"] = results


def official(device, src, out, tmp):
    try:
        from audiotools import AudioSignal
        from dac import DACFile
        from dac.model import DAC
    except ImportError:
        out["official"] = "not installed"
        print("official descript-audio-codec: not installed (pip install descript-audio-codec)", flush=True)
        return
    torch.manual_seed(0)
    model = DAC().to(device).eval()
    seconds = sf.info(src).duration
    with torch.inference_mode():
        sync(device)
        t = time.perf_counter()
        model.compress(AudioSignal(str(src)), 5.0).save(tmp / "official.dac")
        sync(device)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        model.decompress(DACFile.load(tmp / "official.dac")).write(tmp / "official.wav")
        sync(device)
        t_dec = time.perf_counter() - t
    out["official"] = {"encode_hours_per_hour": seconds / t_enc, "decode_hours_per_hour": seconds / t_dec}
    print(f"official: encode {seconds / t_enc:.1f}, decode {seconds / t_dec:.1f} hours of audio per hour", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="44khz-8kbps")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64], help="rows (windows) per model call")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the 10-minute files")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    out = {"machine": bench.machine(), "device": args.device, "model": args.model}
    if torch.device(args.device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    print(bench.describe_machine(out["machine"]), "; GPU:", out.get("gpu", "none"), flush=True)
    x = music(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        correctness(args.model, args.device, x, out)
        if not args.skip_memory:
            memory(args.model, args.device, out, tmp)
        throughput(args.model, args.device, x, out, args.rows)
        packed(args.model, args.device, x, out, args.rows)
        sf.write(tmp / "clip.wav", x, 44100)
        official(args.device, tmp / "clip.wav", out, tmp)
    print(json.dumps(out, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
