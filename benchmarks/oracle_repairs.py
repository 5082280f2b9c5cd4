"""Which defects of the decoded audio cost the most? Each is repaired from the original, then measured.

    python benchmarks/oracle_repairs.py [--model W ...] [--data data/heldout] [--kbps 8] [--json out.json]

Each file goes through ``dacli encode`` and ``decode`` as a user's would; the decoded audio is then
"repaired" with knowledge only the original has, one defect at a time, and scored with the eval's
metrics (mel distance and ViSQOL, as ``dacli eval``). A repair that lifts the score a lot names a defect
that costs a lot; none of them is a codec (they read the original):

- ``top``: the long-term spectrum at and above 11 kHz set to the original's (third-octave smoothed,
  over the original's frames within 30 dB of its loudest), one fixed gain per frequency;
- ``below``: the same below 11 kHz;
- ``pauses``: in the original's quiet frames (under -45 dBFS, digital silence excepted) the decoded
  level set to the original's, per half-octave band and frame, the decoded fine structure kept.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from round_trip import parse_args, round_trips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import evaluate  # noqa: E402

WINDOW, HOP = 2048, 512
SPLIT_HZ = 11000.0
PAUSE_DBFS = -45.0
REPAIRS = ("decoded", "top", "below", "pauses")
WIN = torch.hann_window(WINDOW, dtype=torch.float64)


def _stft(x):
    return torch.stft(torch.from_numpy(x.astype(np.float64)), WINDOW, HOP, window=WIN, return_complex=True)


def _istft(spec, length):
    return torch.istft(spec, WINDOW, HOP, window=WIN, length=length).numpy()


def _gain(ref_power, deg_power):
    """The amplitude gain that brings summed power ``deg_power`` to ``ref_power``, capped at 40 dB."""
    return (ref_power / (deg_power + 1e-30)).sqrt().clamp(max=100.0)


def _band_gain(ref_power, deg_power, freqs, bands):
    """``_gain`` of the power summed in each band, (bins, frames) → (bins, frames)."""
    gain = torch.ones_like(ref_power)
    for lo, hi in bands:
        k = torch.from_numpy((freqs >= lo) & (freqs < hi))
        if k.any():
            gain[k] = _gain(ref_power[k].sum(0), deg_power[k].sum(0))
    return gain


def repair(x, y, rate, which):
    """The decoded mono ``y`` with one defect repaired from the original ``x`` (same length)."""
    if which == "decoded":
        return y
    X, Y = _stft(x), _stft(y)
    px, py = X.abs().pow(2), Y.abs().pow(2)
    freqs = np.linspace(0, rate / 2, WINDOW // 2 + 1)
    if which in ("top", "below"):
        level = 10 * torch.log10(px.mean(0) + 1e-20)
        active = level > level.max() - 30
        gx, gy = px[:, active].mean(1, keepdim=True), py[:, active].mean(1, keepdim=True)
        gain = torch.ones(len(freqs), 1, dtype=torch.float64)
        for i, f in enumerate(freqs):
            if f > 0 and (f >= SPLIT_HZ) == (which == "top"):
                third = torch.from_numpy((freqs >= f / 2 ** (1 / 6)) & (freqs <= f * 2 ** (1 / 6)))
                gain[i] = _gain(gx[third].sum(), gy[third].sum())
        return _istft(Y * gain, len(y))
    frame_dbfs = 10 * torch.log10(px.sum(0) * 2 / (WIN.pow(2).sum() * WINDOW) + 1e-20)  # Parseval
    quiet = (frame_dbfs < PAUSE_DBFS) & (frame_dbfs > -150)
    edges = [0.0] + [50 * 2 ** (i / 2) for i in range(19) if 50 * 2 ** (i / 2) < rate / 2] + [rate / 2 + 1]
    gain = _band_gain(px, py, freqs, list(zip(edges[:-1], edges[1:])))
    gain = torch.where(quiet[None], gain, torch.ones_like(gain))
    return _istft(Y * gain, len(y))


def main(argv=None):
    args = parse_args(__doc__, "data/heldout", argv)
    torch.set_num_threads(2)
    results = {}
    for label, n, pairs in round_trips(args.model, args.data, args.kbps):
        print(f"{label} ({n} codebooks): mel / ViSQOL per repair: " + ", ".join(REPAIRS), flush=True)
        rows = {}
        for path, x, rate, y in pairs:
            x, y = x.mean(1).astype(np.float64), y.mean(1).astype(np.float64)[:len(x)]
            scores = {}
            for which in REPAIRS:
                m = evaluate.compare(x[:, None], repair(x, y, rate, which)[:, None], rate)
                scores[which] = (m["mel"], m["visqol"])
            rel = str(Path(path).relative_to(args.data)) if Path(args.data).is_dir() else Path(path).name
            rows[rel] = scores
            print(f"  {rel:36s} " + "  ".join(f"{s[0]:.3f}/{s[1]:.2f}" for s in scores.values()), flush=True)
        for kind in sorted({k.split("/")[0] for k in rows if "/" in k} | {"all"}):
            sel = [v for k, v in rows.items() if kind == "all" or k.startswith(kind + "/")]
            mean = {w: np.nanmean([s[w] for s in sel], 0) for w in REPAIRS}
            print(f"  mean {kind:31s} " + "  ".join(f"{m[0]:.3f}/{m[1]:.2f}" for m in mean.values()))
        results[label] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
