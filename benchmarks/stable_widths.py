"""Which row lengths oneDNN computes differently from long rows, per decoder convolution of a model:
the evidence behind dacli.runtime.convs.FastConv.stable_width (docs/PERFORMANCE.md, "Exactness").

    python benchmarks/stable_widths.py [--models dacli-44khz 44khz-8kbps] [--precision fp32 mixed]
                                       [--kinds dilated transposed]

For each distinct convolution (dilated ones of seven taps; transposed ones as the kernel-2
convolution of their frames, which a streamable model does not run: it runs them as 1×1 products),
random input convolved 'valid' as one long row, then in rows of 1 … 199, 255-257, 511, 512, 1000,
1024, 2047 and 2048 outputs (up to 600 for layers of 700 channels or more) at three starts, and in
batches of 2, 4, 8 and 16 rows of 1 … 256 outputs: the lengths whose outputs are not bit for bit those
of the long row. oneDNN's kernels follow ``ONEDNN_MAX_CPU_ISA`` (AVX2, AVX512_CORE, …), so one CPU can
stand in for older ones.
"""

import argparse

import torch

from dacli import bench

LENGTHS = list(range(1, 200)) + [255, 256, 257, 511, 512, 1000, 1024, 2047, 2048]
STARTS = (0, 5, 17)
BATCHES = (2, 4, 8, 16)
BATCH_LENGTHS = (1, 4, 8, 16, 32, 64, 128, 256)


def layers(model, kinds):
    """(name, convolution, weight, dilation) of each distinct convolution of the decoder."""
    seen, found = set(), []
    for c in model.decoder.modules():
        kind = type(c).__name__
        if kind == "FastConv1d" and c.dilation > 1 and "dilated" in kinds:
            found.append(("dilated", c, c.weight, c.dilation))
        elif kind == "FastConvTranspose1d" and "transposed" in kinds:
            found.append(("transposed", c, c.weight, 1))
    for name, c, w, d in found:
        key = (tuple(w.shape), d, w.dtype)
        if key not in seen:
            seen.add(key)
            yield name, c, w, d


def differing(conv, w, d):
    """(lengths of one row that differ, (batch, length) that differ) for this convolution."""
    cl, reach = torch.channels_last, (w.shape[-1] - 1) * d
    longest = 2100 if w.shape[1] < 700 else 600
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, w.shape[1], 1, longest + reach, generator=g).to(w.dtype).contiguous(memory_format=cl)

    def run(t):
        return conv.onednn(t, w, conv.bias, [0, 0], [1, 1], [1, d], 1, "none", [], None)

    whole, rows, batches = run(x), [], []
    for n in [n for n in LENGTHS if n + max(STARTS) <= longest]:
        for s in STARTS:
            y = run(x[..., s:s + n + reach].contiguous(memory_format=cl))
            if not torch.equal(y, whole[..., s:s + n]):
                rows.append(n)
                break
    for b in BATCHES:
        for n in BATCH_LENGTHS:
            y = run(x[..., :n + reach].expand(b, -1, -1, -1).contiguous(memory_format=cl))
            if not bool((y == whole[..., :n]).all()):  # every row against the long row's outputs
                batches.append((b, n))
    return rows, batches


def spans(ns):
    """[1, 2, 3, 7] → '1-3, 7'."""
    out, i = [], 0
    while i < len(ns):
        j = i
        while j + 1 < len(ns) and ns[j + 1] == ns[j] + 1:
            j += 1
        out.append(str(ns[i]) if i == j else f"{ns[i]}-{ns[j]}")
        i = j + 1
    return ", ".join(out) or "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["dacli-44khz", "44khz-8kbps"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "mixed"])
    ap.add_argument("--kinds", nargs="+", default=["dilated", "transposed"], choices=["dilated", "transposed"])
    args = ap.parse_args()
    print("machine:", bench.describe_machine(bench.machine()))
    with torch.no_grad():
        for name in args.models:
            for precision in args.precision:
                model = bench.make_model(name, "cpu", precision)
                print(f"\n{name} ({model.precision})")
                for kind, conv, w, d in layers(model, args.kinds):
                    rows, batches = differing(conv, w, d)
                    print(f"  {kind:10s} {str(tuple(w.shape)):22s} dilation {d} {str(w.dtype)[6:]:8s} rows differ at: "
                          f"{spans(rows)}; batches: {', '.join(f'{b}x{n}' for b, n in batches) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
