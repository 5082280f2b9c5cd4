"""Why do the upper codebooks add so little? Per RVQ level of a checkpoint, on a folder of audio:

    python benchmarks/rvq_diagnostics.py [--model weights/run/latest.pth] [--data data/heldout]
                                         [--seconds 10] [--json out.json]

- ``residual``: energy of the latent residual left after levels 1..k, relative to the latent's energy
  (a level that codes well removes a good share of what is left);
- ``perplexity`` and ``used``: how evenly and how many of the codebook's entries the level uses
  (perplexity = 2^entropy of the code histogram; 1024 is uniform use of a 10-bit codebook);
- ``cos``: mean cosine similarity between a level's projected input and its chosen (normalised)
  code, i.e. how well the level's codebook covers what it is given;
- ``aligned``: mean cosine similarity, per frame in the latent space, between a level's output and
  the residual it was given: near 1 when the level codes (part of) its residual, near 0 when its
  output is orthogonal to it, which makes the residual grow and leaves later levels little to refine;
- ``mel``: mel distance of the decoded audio with the first k levels (the rate-distortion curve);
- ``unquantized mel``: the decoder fed the encoder's latent itself, no quantizer: what the encoder and
  decoder could give at an unlimited bitrate. Close to the 9-level mel, the codebooks are not what
  limits quality; far below it, they are.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import audio  # noqa: E402
from dacli.fileio import AUDIO_EXTS, find_inputs  # noqa: E402
from dacli.metrics import mel_distance  # noqa: E402
from dacli.model import load_checkpoint  # noqa: E402


@torch.no_grad()
def diagnose(model, clips):
    levels = model.quantizer.quantizers
    k_max = len(levels)
    stats = {"residual": np.zeros(k_max), "cos": np.zeros(k_max), "aligned": np.zeros(k_max),
             "mel": np.zeros(k_max)}
    unquantized = 0.0
    hist = [np.zeros(model.codebook_size) for _ in levels]
    energy = 0.0
    for x in clips:
        x = torch.from_numpy(x)[None, None]
        z = model.encoder(x)
        energy += z.pow(2).sum().item()
        y = model.decoder(z)[..., :x.shape[-1]]
        unquantized += mel_distance(y[:, 0], x[:, 0], model.sample_rate).item()
        residual, codes = z, []
        for i, q in enumerate(levels):
            z_q, _, _, idx, z_e = q(residual)
            stats["aligned"][i] += F.cosine_similarity(z_q[0].t(), residual[0].t(), dim=1).sum().item()
            residual = residual - z_q
            stats["residual"][i] += residual.pow(2).sum().item()
            book = F.normalize(q.codebook.weight)[idx[0]]  # (T, D)
            stats["cos"][i] += F.cosine_similarity(z_e[0].t(), book, dim=1).sum().item()
            hist[i] += np.bincount(idx[0].numpy(), minlength=model.codebook_size)
            codes.append(idx)
        codes = torch.stack(codes, 1)
        for k in range(1, k_max + 1):
            y = model.decoder(model.quantizer.from_codes(codes[:, :k]))[..., :x.shape[-1]]
            stats["mel"][k - 1] += mel_distance(y[:, 0], x[:, 0], model.sample_rate).item()
    frames = sum(h.sum() for h in hist[:1])
    out = []
    for i in range(k_max):
        p = hist[i] / hist[i].sum()
        nz = p[p > 0]
        out.append({"level": i + 1, "residual": stats["residual"][i] / energy,
                    "cos": stats["cos"][i] / frames, "aligned": stats["aligned"][i] / frames,
                    "perplexity": float(2 ** -(nz * np.log2(nz)).sum()), "used": int((hist[i] > 0).sum()),
                    "mel": stats["mel"][i] / len(clips)})
    return out, unquantized / len(clips)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="weights/run/latest.pth")
    ap.add_argument("--data", default="data/heldout")
    ap.add_argument("--seconds", type=float, default=10.0, help="from the start of each file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model)  # the plain modules: each stage is looked at by itself
    clips = []
    for path, _ in find_inputs([args.data], AUDIO_EXTS - {".raw"}):
        x, sr = audio.read(path)
        x = audio.resample(x.mean(1), sr, model.sample_rate)[:int(args.seconds * model.sample_rate)]
        x = x[:len(x) // model.hop_length * model.hop_length].astype(np.float32)
        if len(x):
            clips.append(x / max(1.0, float(np.abs(x).max())))
    rows, unquantized = diagnose(model, clips)
    print(f"{args.model} on {len(clips)} clips of {args.data} (≤ {args.seconds:g} s each)")
    print("level  residual   cos  aligned  perplexity  used   mel(1..k)")
    for r in rows:
        print(f"{r['level']:5d}  {r['residual']:8.3f}  {r['cos']:5.3f}  {r['aligned']:7.3f}  {r['perplexity']:9.1f}  "
              f"{r['used']:4d}   {r['mel']:.3f}")
    print(f"unquantized latent: mel {unquantized:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "levels": rows, "unquantized_mel": unquantized},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
