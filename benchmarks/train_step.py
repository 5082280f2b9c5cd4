"""Where a training step of the bundled configuration spends its time, and how many steps an hour.

    python benchmarks/train_step.py [--steps 5] [--variants autograd-fp32,fused-fp32,fused-bf16]
                                    [--profile] [--json out.json]

Runs ``Trainer.train_step`` for each variant (Snake by autograd or by the fused kernel; fp32 or bf16
autocast; channels-first or channels-last layout) on the same batches drawn from a corpus folder
(``--data``, default data/train; random audio if it is missing), the variants taking turns step by
step after two warm-up steps each; prints the median seconds and steps per hour, the median ratio to
the first variant's step on the same batch, and each step's time, and with ``--profile`` the torch
profiler's self time grouped into the parts of the step: convolutions, Snake, STFT/FFT and mel,
weight norm, the optimisers, everything else.
Run it on an idle machine: other load (a training run, tests) changes the figures.
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")  # before torch loads oneDNN: see time_variants

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dacli import bench
from dacli.training.config import CONFIGS
from dacli.training.data import TrainingAudio
from dacli.training.trainer import Trainer

# profiler op name → part of the step (first match wins; matched against the lower-cased name)
PARTS = [
    ("snake", ("snake",)),
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("stft / fft / mel", ("fft", "stft", "_fft_", "matmul", "mm", "bmm", "log10", "abs", "clamp")),
    ("weight norm", ("_weight_norm", "norm_except_dim", "linalg_vector_norm", "norm")),
    ("optimiser", ("adamw", "_foreach", "clip_grad", "lerp", "addcdiv", "addcmul")),
    ("activations (sin/pow/mul/add, leaky relu)", ("sin", "cos", "pow", "mul", "add", "div", "leaky_relu",
                                                    "reciprocal", "sub", "neg", "where")),
    ("copies / layout", ("copy_", "contiguous", "cat", "pad", "reflection", "clone", "to", "permute",
                         "transpose", "index", "gather", "scatter", "fill", "zero")),
]


def part_of(name):
    low = name.lower()
    for part, keys in PARTS:
        if any(k in low for k in keys):
            return part
    return "other"


def make_trainer(variant, cfg):
    """A trainer for one "snake-precision[-layout]" variant (layout: "cl" channels-last, "ncl"
    channels-first, absent: the trainer's default)."""
    snake, precision, *layout = variant.split("-")
    torch.manual_seed(0)
    return Trainer(cfg, precision=precision, fused_snake=snake == "fused",
                   channels_last={"cl": True, "ncl": False}[layout[0]] if layout else None)


def time_variants(variants, cfg, batches, profile):
    """Seconds of each timed step of each variant, and the profiler's self time per op when
    ``profile``. After two warm-up steps each, the variants take turns step by step, in order and
    then in reverse (A B C, C B A, ...), on the same batches, so that the machine's drifts in speed
    (other load, clocks: ±20 % from one minute to the next on a 2-core machine) touch them all
    alike; ratios are taken step by step (:func:`paired_ratio`). oneDNN's kernel cache is enlarged
    (ONEDNN_PRIMITIVE_CACHE_CAPACITY, set before torch loads) so that it holds every variant's."""
    trainers = {v: make_trainer(v, cfg) for v in variants}
    for trainer in trainers.values():
        for _ in range(2):
            trainer.train_step(batches[0])
    times = {v: [] for v in variants}
    ops = {v: {} for v in variants}
    for i, x in enumerate(batches[1:]):
        for v in variants if i % 2 == 0 else variants[::-1]:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else \
                    contextlib.nullcontext() as prof:
                t = time.perf_counter()
                trainers[v].train_step(x)
                times[v].append(time.perf_counter() - t)
            if profile:
                for ev in prof.key_averages():
                    ops[v][ev.key] = ops[v].get(ev.key, 0.0) + ev.self_cpu_time_total / 1e6
    return {v: (times[v], ops[v]) for v in variants}


def paired_ratio(reference, times):
    """Median over the steps of (reference's step time / this variant's, same batch, side by side)."""
    return statistics.median(a / b for a, b in zip(reference, times))


def print_parts(ops):
    parts = {}
    for op, sec in ops.items():
        parts.setdefault(part_of(op), {})[op] = sec
    total = sum(ops.values())
    out = {}
    for part, members in sorted(parts.items(), key=lambda kv: -sum(kv[1].values())):
        share = sum(members.values()) / total
        top = sorted(members.items(), key=lambda kv: -kv[1])[:5]
        print(f"    {part:44s} {100 * share:5.1f} %  " + ", ".join(f"{k} {100 * v / total:.1f}" for k, v in top))
        out[part] = {"share": share, "top": {k: v / total for k, v in top}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/train")
    ap.add_argument("--config", default="bundled", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (after two warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="autograd-fp32,fused-fp32,fused-bf16",
                    help="comma-separated SNAKE-PRECISION[-LAYOUT] (autograd|fused, fp32|mixed|bf16, cl|ncl); "
                         "the first is the reference of the ratios")
    ap.add_argument("--profile", action="store_true", help="also print where each variant's time goes")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = bench.machine()
    print(bench.describe_machine(machine))
    cfg = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    n = Trainer(cfg).n
    if Path(args.data).is_dir():
        corpus = TrainingAudio(args.data, cfg["model"]["sample_rate"])
        batches = [corpus.batch(rng, cfg["batch"], n) for _ in range(args.steps + 1)]
    else:
        print(f"{args.data} missing: random audio")
        batches = [torch.from_numpy(rng.uniform(-0.5, 0.5, (cfg["batch"], 1, n)).astype(np.float32))
                   for _ in range(args.steps + 1)]
    print(f"{args.config}: batch {cfg['batch']} × {n} samples, {args.threads} threads, "
          f"median of {args.steps} steps, variants taking turns" + (" under the profiler" if args.profile else ""))
    result = {"machine": machine, "config": args.config, "threads": args.threads, "profiled": args.profile,
              "variants": {}}
    reference = None
    for variant, (times, ops) in time_variants(args.variants.split(","), cfg, batches, args.profile).items():
        sec = statistics.median(times)
        reference = reference or times
        ratio = paired_ratio(reference, times)
        print(f"  {variant:16s} {sec:6.2f} s/step  {3600 / sec:6.0f} steps/h  {ratio:.2f}x   "
              f"(steps: {' '.join(f'{t:.2f}' for t in times)})")
        result["variants"][variant] = {"sec_per_step": sec, "steps_per_hour": 3600 / sec,
                                       "speedup": ratio, "steps": times}
        if ops:
            result["variants"][variant]["parts"] = print_parts(ops)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
