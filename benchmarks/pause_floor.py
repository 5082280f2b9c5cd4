"""Does the codec keep pauses quiet? The noise floor of decoded audio in the original's quietest frames.

    python benchmarks/pause_floor.py [--model W ...] [--data data/heldout/speech] [--kbps 8] [--json out.json]

Each file goes through ``dacli encode`` and ``decode`` as a user's would (loudness normalisation
included). The original is cut into 2048-sample frames; in its quietest quarter of frames (the pauses
of speech) the mean energy of the original and of the decoded audio is printed in dB relative to full
scale, with the loud half of the frames for comparison. A codec that fills silence with noise shows a
"pause" figure far above the original's; the log-mel distance counts that noise in every pause.
Several ``--model`` values are measured in the same run.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from round_trip import parse_args, round_trips

FRAME = 2048


def frame_db(x):
    n = len(x) // FRAME
    energy = (x[:n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2).mean(1)
    return 10 * np.log10(energy + 1e-20)


def floors(original, decoded):
    """(original pause dB, decoded pause dB, original loud dB, decoded loud dB): mean energy over the
    original's quietest quarter and loudest half of frames."""
    ref = frame_db(original)
    order = np.argsort(ref)
    quiet, loud = order[:max(1, len(order) // 4)], order[len(order) // 2:]
    out = frame_db(decoded)[:len(ref)]

    def mean_db(db, idx):
        return float(10 * np.log10(np.mean(10 ** (db[idx] / 10))))
    return mean_db(ref, quiet), mean_db(out, quiet), mean_db(ref, loud), mean_db(out, loud)


def main(argv=None):
    args = parse_args(__doc__, "data/heldout/speech", argv)
    torch.set_num_threads(2)
    results = {}
    for label, n, pairs in round_trips(args.model, args.data, args.kbps):
        print(f"{label} ({n} codebooks): file, pause dB original -> decoded, loud dB original -> decoded")
        rows = []
        for path, x, _, y in pairs:
            row = floors(x.mean(1), y.mean(1))
            rows.append({"file": Path(path).name, "pause_original": row[0], "pause_decoded": row[1],
                         "loud_original": row[2], "loud_decoded": row[3]})
            print(f"  {Path(path).name:24s} {row[0]:7.1f} -> {row[1]:6.1f}   {row[2]:6.1f} -> {row[3]:6.1f}")
        excess = [r["pause_decoded"] - r["pause_original"] for r in rows]
        print(f"  median pause excess: {np.median(excess):+.1f} dB")
        results[label] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
