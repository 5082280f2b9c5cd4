"""Where bfloat16 costs quality: mel distance of held-out clips coded with the encoder and the decoder
in different precisions.

    python benchmarks/precision_split.py [--data data/heldout] [--model NAME|PATH] [--codebooks 8]

Each clip (mono, peak-limited, at the model's rate) is encoded in fp32 and in bf16, and the fp32
codes are decoded in fp32, mixed and bf16: the rows say what the encoder's precision costs (codes
differ, does the audio get worse?) and what the decoder's does. The mel distance is the raw one of
``dacli.metrics`` (no loudness matching, unlike ``dacli eval``), enough to compare precisions.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dacli  # noqa: E402
from dacli import bench, codec  # noqa: E402
from dacli.metrics import mel_distance  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/heldout")
    ap.add_argument("--model", default=None)
    ap.add_argument("--codebooks", type=int, default=8)
    args = ap.parse_args(argv)
    print(bench.describe_machine(bench.machine()))
    models = {p: dacli.load_model(args.model, "cpu", p) for p in ("fp32", "mixed", "bf16")}
    rate = models["fp32"].sample_rate
    rows = {(codes, decoder): [] for codes, decoder in (("fp32", "fp32"), ("bf16", "fp32"), ("fp32", "mixed"),
                                                        ("fp32", "bf16"))}
    equal = []
    for path in sorted(Path(args.data).rglob("*.flac")):
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        if sr != rate:
            continue
        x = x.T[:1]
        x = x / max(1.0, float(np.abs(x).max()))
        codes = {p: codec.encode_array(models[p], x, args.codebooks) for p in ("fp32", "bf16")}
        equal.append(float((codes["fp32"] == codes["bf16"]).mean()))
        for (encoder, decoder), values in rows.items():
            y = codec.decode_array(models[decoder], codes[encoder])[:, :x.shape[1]]
            values.append(float(mel_distance(torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(x), rate)))
    print(f"{len(equal)} clips of {args.data}; bf16 codes equal to fp32's: {100 * np.mean(equal):.1f} %")
    for (encoder, decoder), values in rows.items():
        label = f"{encoder} codes, {decoder} decoder"
        print(f"  {label:28s} mel {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
