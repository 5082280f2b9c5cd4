"""Where a push's time goes, layer by layer: N streams of P-frame pushes through
dacli.runtime.stepping.Steps against the same layers run on one long push (the one pass through the
same code, its weights packed), each layer's seconds per frame and their ratio.

    python benchmarks/stream_layers.py [--model 44khz-8kbps] [--precision mixed] [--streams 4] [--frames 8]
                                       [--runs 3] [--fit 1 2 4 8 16]

Random codes (the speed of a convolution does not depend on its values). The long pushes are 832
frames, the first two untimed (the second packs the weights for that shape); the streams push 832
frames each, timed after 16. The two take turns ``--runs`` times; each layer keeps its fastest run
of each. ``--fit``: pushes of each of these sizes instead of ``--frames``, and each layer's time a push
fitted as a fixed part plus a part per frame (least squares), against the long pushes' time per frame
and the one pass of the model as loaded (``model.decode`` of 832 frames, timed in the same turns).
Run it on an idle machine.
"""

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from dacli import bench
from dacli.stream import StreamDecoder

LONG = 832


def timed_stream(m, codes, streams, frames, skip, end):
    """(layers, seconds per layer, frames decoded) of the pushes after ``skip`` frames up to ``end``."""
    d = StreamDecoder(m, streams=streams)
    at = 0
    while at < skip:
        d.push({s: codes[s][..., at:at + frames] for s in range(streams)})
        at += frames
    seconds: dict = defaultdict(float)
    for i, op in enumerate(d.steps.ops):
        def run(x, g, last, run=op.run, i=i):
            t = time.perf_counter()
            y = run(x, g, last)
            seconds[i] += time.perf_counter() - t
            return y
        op.run = run
    while at + frames <= end:
        d.push({s: codes[s][..., at:at + frames] for s in range(streams)})
        at += frames
    done = streams * (at - skip)
    d.flush()
    return d.steps.ops, seconds, done


def keep_fastest(kept: dict, seconds: dict, per: float, key=lambda i: i) -> None:
    """Each layer's seconds divided by ``per`` into ``kept`` (under ``key(layer)``) where faster than
    what it holds."""
    for i, v in seconds.items():
        kept[key(i)] = min(v / per, kept.get(key(i), v / per))


def name(op) -> str:
    layer = getattr(op, "layer", None) or op.conv7.layer
    shape = f"{tuple(layer.weight.shape)} d{layer.dilation}" if hasattr(layer, "weight") else type(layer).__name__
    return f"{type(op).__name__.strip('_')} {shape}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="44khz-8kbps")
    ap.add_argument("--precision", default="mixed")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fit", type=int, nargs="+", metavar="FRAMES",
                    help="push sizes whose times are fitted as fixed + per frame, layer by layer")
    a = ap.parse_args()
    print("machine:", bench.describe_machine(bench.machine()))
    m = bench.make_model(a.model, "cpu", a.precision)
    torch.manual_seed(0)
    n = 3 * LONG
    codes = [torch.randint(0, m.codebook_size, (1, m.n_codebooks, n)).numpy() for _ in range(a.streams)]
    if a.fit:
        return fit(m, codes, a)
    one: dict = {}
    push: dict = {}
    for _ in range(a.runs):  # taking turns; each layer's fastest of the runs
        ops, t, one_frames = timed_stream(m, codes[:1], 1, LONG, 2 * LONG, 3 * LONG)
        keep_fastest(one, t, one_frames)
        _, t, push_frames = timed_stream(m, codes, a.streams, a.frames, 16, 16 + LONG)
        keep_fastest(push, t, push_frames)
    total_one, total_push = sum(one.values()), sum(push.values())
    print(f"{a.model} ({m.precision}): {a.streams} streams x {a.frames} frames against pushes of {LONG} frames, "
          f"µs per frame; share {total_one / total_push:.3f}")
    for i, op in enumerate(ops):
        x, y = one[i], push[i]
        print(f"{i:3d} {name(op):38s} long {x * 1e6:8.1f}  streams {y * 1e6:8.1f}  x{y / x:5.2f}  "
              f"{(y - x) * a.streams * a.frames * 1e3:+6.2f} ms a push")
    print(f"    all layers: long {total_one * 1e6:.1f}, streams {total_push * 1e6:.1f} µs per frame")


def fit(m, codes, a):
    """Each layer's time a push of N streams as fixed + per frame over the push sizes ``a.fit``."""
    one: dict = {}
    push: dict = {}
    loaded = float("inf")
    for _ in range(a.runs):  # taking turns; each layer's fastest of the runs
        t0 = time.perf_counter()
        m.decode(torch.from_numpy(codes[0][..., :LONG]).long())
        loaded = min(loaded, (time.perf_counter() - t0) / LONG)
        ops, t, one_frames = timed_stream(m, codes[:1], 1, LONG, 2 * LONG, 3 * LONG)
        keep_fastest(one, t, one_frames)
        for p in a.fit:
            _, t, done = timed_stream(m, codes, a.streams, p, 16, 16 + LONG)
            keep_fastest(push, t, done / (a.streams * p), key=lambda i, p=p: (i, p))  # seconds a push
    design = np.array([[1.0, p] for p in a.fit])
    print(f"{a.model} ({m.precision}): {a.streams} streams, pushes of {a.fit} frames, each layer's time a push "
          f"fitted as fixed + per frame (of one stream) against pushes of {LONG} frames")
    fixed_all, frame_all = 0.0, 0.0
    for i, op in enumerate(ops):
        fixed, slope = np.linalg.lstsq(design, np.array([push[i, p] for p in a.fit]), rcond=None)[0]
        frame = slope / a.streams
        fixed_all, frame_all = fixed_all + fixed, frame_all + frame
        print(f"{i:3d} {name(op):38s} fixed {fixed * 1e3:6.3f} ms  per frame {frame * 1e6:7.1f} µs  "
              f"long {one[i] * 1e6:7.1f} µs  x{frame / one[i]:5.2f}")
    print(f"    all layers: fixed {fixed_all * 1e3:.2f} ms a push, {frame_all * 1e6:.1f} µs per frame; long pushes "
          f"{sum(one.values()) * 1e6:.1f} µs per frame; the one pass as loaded {loaded * 1e6:.1f} µs per frame")
    for p in a.fit:
        share = a.streams * p * loaded / (fixed_all + frame_all * a.streams * p)
        print(f"    {a.streams} x {p} frames: the layers' share of the one pass as loaded {share:.3f}")


if __name__ == "__main__":
    main()
