"""Speed and memory of file-to-file encode and decode (``dacli bench``; ``benchmarks/`` adds the
official implementation beside it).

Each phase runs in a fresh child process, so its peak RSS is its own. Models are built from a preset
with seeded random weights (speed and memory do not depend on weight values) unless a checkpoint
is named.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from . import codec, registry, runtime, windows
from .model import PRESETS, build
from .runtime import hardware, process
from .runtime.convs import FastConv
from .runtime.snake import kernel_available


def flops_per_second(model):
    """(encode, decode) FLOPs (2 per multiply-add) for one second of mono audio, counted by running
    one second through a prepared model with hooks on every convolution."""
    counts = {"encode": 0, "decode": 0}
    part = ["encode"]

    def hook(mod, inp, out):
        positions = inp[0].shape[-1] if mod.transposed else out.shape[-1]
        counts[part[0]] += 2 * mod.weight.numel() * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, FastConv)]
    n = model.sample_rate // model.hop_length * model.hop_length
    try:
        with torch.inference_mode():
            codes = model.encode_batch(torch.zeros(1, 1, n, device=model.device))
            part[0] = "decode"
            model.decode_batch(codes)
    finally:
        for h in handles:
            h.remove()
    return counts["encode"] * model.sample_rate / n, counts["decode"] * model.sample_rate / n


def make_model(name, device, precision, tune=True):
    """The model to time: ``name`` as :func:`dacli.load_model` finds it, or for an official preset not
    on this machine, that architecture with random weights (speed does not depend on the weights). The
    process gets the settings the command line runs with first (:func:`dacli.tune_process`), unless
    ``tune`` is false."""
    if tune:
        process.tune_process()
    if name in PRESETS and registry.locate(name) is None:
        torch.manual_seed(0)
        model = build(name)
        model.weights_hash = "0" * 64
        return runtime.prepare(model, device, precision)
    return registry.load_model(name, device, precision)


def phase(kind, model_name, src, dst, device="auto", precision="fp32", window_seconds=None,
          n_codebooks=None):
    """Run one phase in this process → dict with seconds and peak RSS (MiB)."""
    model = make_model(model_name, device, precision)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    if kind == "encode":
        codec.encode_file(model, src, dst, n_codebooks, window_seconds)
    else:
        codec.decode_file(model, src, dst, "wav", window_seconds)
    sync()
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if model.device.type == "cuda":
        rss_gpu = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        rss_gpu = None
    return {"phase": kind, "seconds": seconds, "peak_rss_mib": rss, "peak_cuda_mib": rss_gpu}


def run_phase(kind, model_name, src, dst, **kw):
    """Run :func:`phase` in a child process (fresh peak RSS) → its dict."""
    args = [sys.executable, "-m", "dacli.bench", "--phase", kind, "--model", model_name, "--src", str(src),
            "--dst", str(dst), "--json-args", json.dumps(kw)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark phase {kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_audio(path, seconds=60.0, channels=1, source=None, rate=44100):
    """Write ``seconds`` of audio: the given real recording looped (forwards, backwards), or noise-like
    music-ish synthetic audio when none is given."""
    if source:
        x, rate = sf.read(str(source), dtype="float32", always_2d=True)
        x = x.mean(1)
    else:
        rng = np.random.default_rng(0)
        t = np.arange(int(rate * 10)) / rate
        x = (0.2 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t))) + 0.03 * rng.standard_normal(len(t)))
        x = x.astype(np.float32)
    n = int(seconds * rate)
    with sf.SoundFile(str(path), "w", rate, channels, subtype="PCM_16") as f:
        done, k = 0, 0
        while done < n:
            piece = (x if k % 2 == 0 else x[::-1])[:n - done]
            f.write(np.repeat(piece[:, None], channels, 1) * (1.0 if channels == 1 else
                                                              np.linspace(1, 0.6, channels)[None]))
            done += len(piece)
            k += 1
    return path


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the CPU features that decide dacli's speed


def machine():
    """What a speed figure belongs to: CPU model, cores, the flags that decide speed, torch and oneDNN."""
    import re
    info = hardware.cpu_info()
    # virtual machines often name only the brand ("AMD EPYC"): family and model tell the generation
    model = f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    flags = set(info.get("flags", "").split())
    onednn = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", torch.__config__.show())
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
            "native_bf16": hardware.native_bf16("cpu"), "torch": torch.__version__,
            "onednn": onednn.group(1) if onednn else None}


def describe_machine(m):
    return (f"{m['cpu_model']}, {m['cpu_count']} cores, flags: {' '.join(m['cpu_flags']) or 'none of ' + '/'.join(SPEED_FLAGS)}"
            f"; torch {m['torch']}, oneDNN {m['onednn']}")


def bench(model_name="44khz-8kbps", source=None, seconds=60.0, channels=1, device="auto", precision="auto",
          window_seconds=None, workdir=None):
    """Time file-to-file encode and decode → dict of results (real-time factors, RSS, GFLOP/s)."""
    precision = hardware.resolve_precision(precision, hardware.resolve_device(device))  # report what ran
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = test_audio(Path(tmp) / "in.wav", seconds, channels, source)
        kw = dict(device=device, precision=precision, window_seconds=window_seconds)
        enc = run_phase("encode", model_name, src, Path(tmp) / "x.dac", **kw)
        dec = run_phase("decode", model_name, Path(tmp) / "x.dac", Path(tmp) / "y.wav", **kw)
    model = make_model(model_name, "cpu", "fp32")
    f_enc, f_dec = flops_per_second(model)
    audio_s = seconds * channels
    res = {"machine": machine(), "model": model_name, "device": str(hardware.resolve_device(device)),
           "precision": precision,
           "threads": torch.get_num_threads(), "audio_seconds": seconds, "channels": channels,
           "snake": "fused C kernel" if kernel_available() else "torch operations",
           "encode_window_seconds": window_seconds or windows.ENCODE_WINDOW_SECONDS,
           "decode_window_seconds": window_seconds or windows.DECODE_WINDOW_SECONDS,
           "encode_seconds": enc["seconds"], "decode_seconds": dec["seconds"],
           "encode_rtf": seconds / enc["seconds"], "decode_rtf": seconds / dec["seconds"],
           "encode_peak_rss_mib": enc["peak_rss_mib"], "decode_peak_rss_mib": dec["peak_rss_mib"],
           "encode_gflop_per_audio_s": f_enc / 1e9, "decode_gflop_per_audio_s": f_dec / 1e9,
           "encode_gflops": f_enc * audio_s / enc["seconds"] / 1e9,
           "decode_gflops": f_dec * audio_s / dec["seconds"] / 1e9}
    if enc["peak_cuda_mib"] is not None:
        res.update(encode_peak_cuda_mib=enc["peak_cuda_mib"], decode_peak_cuda_mib=dec["peak_cuda_mib"])
    return res


def report(res):
    lines = [f"machine: {describe_machine(res['machine'])}",
             f"model {res['model']} on {res['device']} ({res['precision']}, {res['threads']} threads), "
             f"{res['audio_seconds']:.0f} s × {res['channels']} ch, windows {res['encode_window_seconds']:g} s "
             f"(encode) / {res['decode_window_seconds']:g} s (decode), Snake: {res.get('snake', '?')}"]
    for k in ("encode", "decode"):
        lines.append(f"  {k}: {res[k + '_seconds']:.2f} s = {res[k + '_rtf']:.2f}× real time, "
                     f"peak RSS {res[k + '_peak_rss_mib']:.0f} MiB, "
                     f"{res[k + '_gflops']:.0f} GFLOP/s ({res[k + '_gflop_per_audio_s']:.1f} GFLOP per audio second)")
    return "\n".join(lines)


def _child(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--json-args", default="{}")
    a = ap.parse_args(argv)
    print(json.dumps(phase(a.phase, a.model, a.src, a.dst, **json.loads(a.json_args))))


if __name__ == "__main__":
    _child(sys.argv[1:])
