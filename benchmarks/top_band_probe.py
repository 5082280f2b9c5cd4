"""Does the latent carry the top band? A linear probe of each frame's 16-22 kHz level.

    python benchmarks/top_band_probe.py [--model W] [--train data/train] [--data data/heldout]
                                        [--files 160] [--seconds 6] [--band 16000]

For every code frame (hop 512, a 2048-sample Hann window centred on it) the energy above ``--band`` Hz
is taken in dB. A ridge regression learns it from the encoder's latent, before (z) and after (z_q, all
codebooks) quantisation, five frames around each, on excerpts of ``--files`` training files; it is
then tested on the held-out files beside what the decoder itself renders from z_q. Printed per file:
the original's level relative to 1.4-11 kHz ("tilt") and median / RMS errors in dB of the decoded
audio and of the two probes; only frames whose 1.4-11 kHz level is above -70 dB count.

Reading: where the decoder is wrong and a probe on z_q is right, the codes hold the level and the
decoder fails to render it; where both probes are as wrong as the decoder, the level is missing from
the latent already (the encoder's loss, not the quantizer's). A linear probe can only show that the
level is present, not that it is absent: the decoder is not linear.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import audio, codec  # noqa: E402
from dacli.fileio import AUDIO_EXTS, find_inputs  # noqa: E402
from dacli.registry import load_model  # noqa: E402

WINDOW = 2048
CONTEXT = 2       # frames on each side given to the probe
MIN_MID_DB = -70  # frames quieter than this in 1.4-11 kHz are left out


def band_levels(x, hop, rate, band):
    """Per code frame: (dB above ``band`` Hz, dB in 1.4-11 kHz)."""
    frames = len(x) // hop
    padded = np.pad(x, (WINDOW // 2, WINDOW // 2 + hop))
    starts = np.arange(frames) * hop + hop // 2
    power = np.abs(np.fft.rfft(padded[starts[:, None] + np.arange(WINDOW)] * np.hanning(WINDOW), axis=1)) ** 2
    freqs = np.fft.rfftfreq(WINDOW, 1 / rate)
    top = power[:, freqs >= band].sum(1)
    mid = power[:, (freqs >= 1400) & (freqs < 11000)].sum(1)
    return 10 * np.log10(top + 1e-12), 10 * np.log10(mid + 1e-12)


def read_mono(path, rate, hop, seconds=None, rng=None):
    """A file near what the codec sees: mono, at the model rate, at its target loudness (no peak limit);
    an excerpt if ``seconds``."""
    x, sr = audio.read(path)
    x = audio.resample(x.mean(1), sr, rate)
    if seconds and len(x) > seconds * rate:
        start = rng.integers(0, len(x) - int(seconds * rate))
        x = x[start:start + int(seconds * rate)]
    db = audio.loudness(x, rate)
    if np.isfinite(db):
        x = x * audio.db_to_gain(codec.TARGET_LOUDNESS - db)
    return x[:len(x) // hop * hop].astype(np.float32)


@torch.inference_mode()
def latents(model, x):
    """(z, z_q with all codebooks, decoded audio) of a mono array; latents as (frames, dims)."""
    z = model.encoder(torch.from_numpy(x)[None, None])
    z_q = model.quantizer(z, model.n_codebooks)[0]
    y = model.decoder(z_q)[0, 0].numpy()[:len(x)]
    return z[0].T.numpy(), z_q[0].T.numpy(), y


def with_context(f):
    padded = np.pad(f, ((CONTEXT, CONTEXT), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(f)] for i in range(2 * CONTEXT + 1)], 1)


def ridge(x, y, lam=1.0):
    """A fitted ridge regression on standardised features, as a function."""
    mu, sd = x.mean(0), x.std(0) + 1e-6

    def design(v):
        return np.c_[(v - mu) / sd, np.ones(len(v))]
    a = design(x)
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    return lambda v: design(v) @ w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="weights/run/latest.pth")
    ap.add_argument("--train", default="data/train")
    ap.add_argument("--data", default="data/heldout")
    ap.add_argument("--files", type=int, default=160)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--band", type=float, default=16000.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model, device="cpu", precision="fp32")
    rate, hop = model.sample_rate, model.hop_length

    rng = np.random.default_rng(0)
    train = [p for p, _ in find_inputs([args.train], AUDIO_EXTS - {".raw"})]
    feats = {"z": [], "z_q": []}
    target, decoded = [], []
    for i in rng.choice(len(train), min(args.files, len(train)), replace=False):
        x = read_mono(train[i], rate, hop, args.seconds, rng)
        if len(x) < 4 * hop:
            continue
        z, z_q, y = latents(model, x)
        top, mid = band_levels(x, hop, rate, args.band)
        keep = mid > MIN_MID_DB
        decoded.append(band_levels(y, hop, rate, args.band)[0][keep])
        feats["z"].append(with_context(z)[keep])
        feats["z_q"].append(with_context(z_q)[keep])
        target.append(top[keep])
    target = np.concatenate(target)
    probes = {k: ridge(np.concatenate(v), target) for k, v in feats.items()}
    print(f"{args.model}: probe of the level above {args.band / 1000:g} kHz fitted on {len(target)} frames "
          f"of {len(feats['z'])} training excerpts")
    fit = [np.concatenate(decoded)] + [probes[k](np.concatenate(feats[k])) for k in ("z_q", "z")]
    print("on those training frames, RMS error dB: decoded {:.1f}, probe z_q {:.1f}, probe z {:.1f}".format(
        *(np.sqrt(np.mean((f - target) ** 2)) for f in fit)))

    print(f"{'file':32s} {'tilt':>6s} | error dB, median / RMS: {'decoded':>13s} {'probe z_q':>13s} {'probe z':>13s}")
    errors = {"decoded": [], "probe z_q": [], "probe z": []}
    for path, _ in find_inputs([args.data], AUDIO_EXTS - {".raw"}):
        x = read_mono(path, rate, hop)
        z, z_q, y = latents(model, x)
        top, mid = band_levels(x, hop, rate, args.band)
        keep = mid > MIN_MID_DB
        estimates = {"decoded": band_levels(y, hop, rate, args.band)[0],
                     "probe z_q": probes["z_q"](with_context(z_q)), "probe z": probes["z"](with_context(z))}
        cells = []
        for name, est in estimates.items():
            err = (est - top)[keep]
            errors[name].append(err)
            cells.append(f"{np.median(err):6.1f} /{np.sqrt(np.mean(err ** 2)):5.1f}")
        print(f"{path.parent.name + '/' + path.stem:32s} {np.median((top - mid)[keep]):6.1f} | "
              f"{'':24s} " + " ".join(c.rjust(13) for c in cells))
    print(f"{'all frames, RMS':39s} | {'':24s} "
          + " ".join(f"{np.sqrt(np.mean(np.concatenate(e) ** 2)):13.1f}" for e in errors.values()))


if __name__ == "__main__":
    main()
