"""Does the codec keep the top octave? Energy per band of decoded audio against the original.

    python benchmarks/top_octave.py [--model weights/run/latest.pth] [--data data/heldout/speech]
                                    [--kbps 8] [--json out.json]

For each file (mono, at the model rate) the long-term spectrum of the original and of the decoded
audio is summed in octave bands (0.7-1.4, 1.4-2.8, 2.8-5.5, 5.5-11, 11-22 kHz); prints decoded minus
original in dB per band, per file and as a median. A codec that learnt to drop the top octave (from
band-limited training audio) shows a large negative figure in 11-22 kHz while the lower bands stay
near 0.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import audio, codec  # noqa: E402
from dacli.fileio import AUDIO_EXTS, find_inputs  # noqa: E402
from dacli.registry import load_model  # noqa: E402

BANDS = [(700, 1400), (1400, 2800), (2800, 5500), (5500, 11000), (11000, 22050)]


def band_energies(x, rate):
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in BANDS])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="weights/run/latest.pth")
    ap.add_argument("--data", default="data/heldout/speech")
    ap.add_argument("--kbps", type=float, default=8.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = load_model(args.model, device="cpu", precision="fp32")
    n = model.n_codebooks_for_kbps(args.kbps)
    rows = []
    for path, _ in find_inputs([args.data], AUDIO_EXTS - {".raw"}):
        x, sr = audio.read(path)
        x = audio.resample(x.mean(1), sr, model.sample_rate).astype(np.float32)[None]
        y = codec.decode_array(model, codec.encode_array(model, x, n_codebooks=n))[0, :x.shape[1]]
        diff = 10 * np.log10((band_energies(y, model.sample_rate) + 1e-20) / (band_energies(x[0], model.sample_rate) + 1e-20))
        rows.append((path.name, diff))
    print(f"{args.model}, {n} codebooks, {len(rows)} files of {args.data}: decoded − original, dB per band")
    print(f"{'file':32s} " + " ".join(f"{lo / 1000:g}-{hi / 1000:g}k".rjust(9) for lo, hi in BANDS))
    for name, d in rows:
        print(f"{name:32s} " + " ".join(f"{v:9.1f}" for v in d))
    med = np.median(np.stack([d for _, d in rows]), 0)
    print(f"{'median':32s} " + " ".join(f"{v:9.1f}" for v in med))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "codebooks": n, "bands_hz": BANDS,
                                               "files": {k: d.tolist() for k, d in rows},
                                               "median_db": med.tolist()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
