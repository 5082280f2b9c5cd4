"""Quality as the DAC paper measures it: mel distance, STFT distance, SI-SDR and ViSQOL between a
reference and a degraded recording, and end-to-end runs of codecs over a folder — ours at chosen
bitrates and the baselines Opus and MP3 through ffmpeg — with the real bitrate from file sizes.

Before measuring, both signals are resampled to 44.1 kHz, cut to the same length, and the degraded
one is gain-matched to the reference's integrated loudness (as DAC's evaluation does). Distances are
averaged over channels; ViSQOL (v3, audio mode, visqol-python) scores the mono mix at 48 kHz.
"""

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import audio, codec, container
from .errors import DacliError
from .fileio import AUDIO_IN, find_inputs
from .metrics import mel_distance, si_sdr, stft_distance
from .runtime.hardware import PRECISIONS

EVAL_RATE = 44100
METRICS = ("mel", "stft", "sisdr", "visqol")


_VISQOL = None


def visqol(ref, deg, rate):
    """ViSQOL v3 audio-mode MOS-LQO of mono float arrays (resampled to 48 kHz)."""
    global _VISQOL
    if _VISQOL is None:
        from visqol import VisqolApi
        _VISQOL = VisqolApi()
        _VISQOL.create(mode="audio")
    r = audio.resample(ref, rate, 48000).astype(np.float64)
    d = audio.resample(deg, rate, 48000).astype(np.float64)
    try:
        return float(_VISQOL.measure_from_arrays(r, d, 48000).moslqo)
    except ValueError:  # shorter than ViSQOL's minimum patch (about a second)
        return float("nan")


def compare(ref, deg, rate, with_visqol=True):
    """Metrics between (samples, channels) arrays at ``rate`` → dict."""
    ref = audio.resample(np.asarray(ref, np.float32), rate, EVAL_RATE)
    deg = audio.resample(np.asarray(deg, np.float32), rate, EVAL_RATE)
    ref, deg = ref.reshape(len(ref), -1), deg.reshape(len(deg), -1)
    if ref.shape[1] != deg.shape[1]:
        raise DacliError(f"channel counts differ ({ref.shape[1]} vs {deg.shape[1]})")
    n = min(len(ref), len(deg))
    ref, deg = ref[:n], deg[:n]
    if n < 2048:
        raise DacliError("audio too short to measure (under 2048 samples at 44.1 kHz)")
    l_ref, l_deg = audio.loudness(ref, EVAL_RATE), audio.loudness(deg, EVAL_RATE)
    if l_deg > audio.MIN_LOUDNESS:
        deg = deg * audio.db_to_gain(l_ref - l_deg)
    r, d = torch.from_numpy(ref.T.copy()), torch.from_numpy(deg.T.copy())
    out = {"mel": float(mel_distance(d, r, EVAL_RATE)), "stft": float(stft_distance(d, r)),
           "sisdr": float(si_sdr(r, d).mean())}
    out["visqol"] = visqol(ref.mean(1), deg.mean(1), EVAL_RATE) if with_visqol else float("nan")
    return out


def compare_files(ref_path, deg_path, with_visqol=True):
    ref, rr = audio.read(ref_path)
    deg, rd = audio.read(deg_path)
    if rd != rr:
        deg = audio.resample(deg, rd, rr)
    return compare(ref, deg, rr, with_visqol)


# --------------------------------------------------------------------------------------------------
# Codecs


@dataclass
class Codec:
    """A codec spec: ``dac:MODEL@KBPS`` (MODEL: bundled name, official name or checkpoint path; the
    default model when omitted, as in ``dac@6``), ``opus@KBPS`` or ``mp3@KBPS``. A dac codec takes
    modifiers after the bitrate, each after a ``/``: a precision to run the model in (``dac@7.75/bf16``,
    ``dac@7.75/mixed``), and ``full`` to encode without recording the input's bandwidth, so that
    decoding does not low-pass (``dac@7.75/full``: what dacli did before the bandwidth field)."""
    spec: str
    family: str = field(init=False)
    kbps: float = field(init=False)
    model: str = field(init=False, default=None)
    precision: str = field(init=False, default="fp32")
    bandwidth: str = field(init=False, default="auto")

    def __post_init__(self):
        name, _, rate = self.spec.partition("@")
        rate, *modifiers = rate.split("/")
        precisions = [m for m in modifiers if m in PRECISIONS]
        unknown = [m for m in modifiers if m not in PRECISIONS and m != "full"]
        if modifiers and (not name.startswith("dac") or unknown or len(precisions) > 1
                          or modifiers.count("full") > 1):
            raise DacliError(f"codec {self.spec!r}: after a dac codec's bitrate come a precision "
                             f"({', '.join('/' + p for p in PRECISIONS)}) and /full, each at most once")
        try:
            self.kbps = float(rate)
        except ValueError:
            raise DacliError(f"codec {self.spec!r}: expected NAME@KBPS, e.g. opus@8 or dac:dacli-44khz@7.75") from None
        kind, _, model = name.partition(":")
        if kind not in ("dac", "opus", "mp3"):
            raise DacliError(f"codec {self.spec!r}: unknown codec {kind!r} (dac, opus, mp3)")
        self.family = (f"dac:{model}" if model else "dac") + "".join("/" + m for m in modifiers) \
            if kind == "dac" else kind
        self.model = model or None
        self.precision = precisions[0] if precisions else "fp32"
        self.bandwidth = "full" if "full" in modifiers else "auto"


def ffmpeg():
    exe = shutil.which("ffmpeg")
    if not exe:
        raise DacliError("ffmpeg is needed for the opus and mp3 baselines: run 'make eval-deps' "
                         "(apt-get install ffmpeg)")
    return exe


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise DacliError(f"{Path(cmd[0]).name} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")


def _mp3_rate(kbps):
    """LAME only offers the lowest bitrates at low sample rates (MPEG-2.5 / MPEG-2 layer III)."""
    return 8000 if kbps <= 8 else 16000 if kbps <= 24 else 22050 if kbps <= 40 else None


class Runner:
    """Runs codecs on files; keeps loaded models; collects codes for the bitrate efficiency."""

    def __init__(self, device="auto"):
        self.device = device
        self.models = {}
        self.codes = {}  # family spec → list of (channels, n, frames) arrays

    def model(self, name, precision="fp32"):
        from .registry import load_model
        if (name, precision) not in self.models:
            self.models[name, precision] = load_model(name, self.device, precision)
        return self.models[name, precision]

    def run(self, c, src, tmp):
        """Encode and decode ``src`` → (decoded wav path, encoded bytes)."""
        tmp = Path(tmp)
        out = tmp / "decoded.wav"
        if c.family.startswith("dac"):
            m = self.model(c.model, c.precision)
            n = m.n_codebooks_for_kbps(c.kbps)
            codec.encode_file(m, src, tmp / "x.dac", n, bandwidth=c.bandwidth)
            codec.decode_file(m, tmp / "x.dac", out, "wav")
            self.codes.setdefault(c.spec, []).append(container.read(tmp / "x.dac")[1])
            return out, (tmp / "x.dac").stat().st_size
        exe = ffmpeg()
        base = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        if c.family == "opus":
            enc = tmp / "x.opus"
            _run(base + ["-i", str(src), "-c:a", "libopus", "-b:a", f"{c.kbps:g}k", str(enc)])
        else:
            enc = tmp / "x.mp3"
            rate = _mp3_rate(c.kbps)
            _run(base + ["-i", str(src), "-c:a", "libmp3lame", "-b:a", f"{c.kbps:g}k"]
                 + (["-ar", str(rate)] if rate else []) + [str(enc)])
        _run(base + ["-i", str(enc), "-c:a", "pcm_f32le", str(out)])
        return out, enc.stat().st_size


def bitrate_efficiency(code_list, bits):
    """Σ per-codebook entropy (bits) / (bits × codebooks), over all frames and channels given."""
    if not code_list:
        return float("nan")
    k = min(c.shape[1] for c in code_list)
    total = 0.0
    for i in range(k):
        counts = np.bincount(np.concatenate([c[:, i].reshape(-1) for c in code_list]), minlength=2 ** bits)
        p = counts[counts > 0] / counts.sum()
        total += float(-(p * np.log2(p)).sum())
    return total / (bits * k)


def evaluate_codecs(specs, source_dir, with_visqol=True, device="auto", progress=None):
    """Run every codec on every audio file under ``source_dir`` → (rows, summary)."""
    codecs = [Codec(s) for s in specs]
    items = find_inputs([source_dir], AUDIO_IN)
    if not items:
        raise DacliError(f"{source_dir}: no audio files")
    runner = Runner(device)
    rows = []
    for c in codecs:
        for src, rel in items:
            with tempfile.TemporaryDirectory() as tmp:
                dec, size = runner.run(c, src, tmp)
                ref, rate = audio.read(src)
                m = compare_files(src, dec, with_visqol)
            duration = len(ref) / rate
            rows.append({"codec": c.spec, "family": c.family, "file": str(rel), "seconds": duration,
                         "kbps": size * 8 / duration / 1000, **m})
            if progress:
                progress(c.spec, rel)
    summary = summarize(rows)
    for c in codecs:
        if c.spec in runner.codes:
            m = runner.model(c.model)
            summary[c.spec]["bitrate_efficiency"] = bitrate_efficiency(runner.codes[c.spec], int(m.bits_per_code))
    return rows, summary


def pair_files(ref: Path, deg: Path) -> list:
    """(reference file, degraded file, relative path): two files, or folders matched by relative
    path with any audio extension."""
    if ref.is_file() and deg.is_file():
        return [(ref, deg, Path(ref.name))]
    if not (ref.is_dir() and deg.is_dir()):
        raise DacliError("REF and DEGRADED must both be files or both be folders")
    out = []
    for src, rel in find_inputs([ref], AUDIO_IN):
        cands = [c for c in (deg / rel).parent.glob(rel.stem + ".*") if c.suffix.lower() in AUDIO_IN]
        if not cands:
            raise DacliError(f"{deg / rel}: no degraded file for {src}")
        out.append((src, cands[0], rel))
    if not out:
        raise DacliError(f"{ref}: no audio files")
    return out


def evaluate_pairs(ref: Path, deg: Path, with_visqol: bool = True):
    """Compare every degraded file with its reference (:func:`pair_files`) → (rows, summary)."""
    rows = [{"codec": "degraded", "family": "degraded", "file": str(rel), **compare_files(r, d, with_visqol)}
            for r, d, rel in pair_files(ref, deg)]
    return rows, summarize(rows)


def summarize(rows):
    """Per codec: mean metrics and, where the rows have them (codec runs), duration-weighted real kbps
    (total bits / total seconds)."""
    out = {}
    for name in dict.fromkeys(r["codec"] for r in rows):
        rs = [r for r in rows if r["codec"] == name]
        s = {"family": rs[0]["family"], "files": len(rs), "kbps": float("nan")}
        if all("kbps" in r and "seconds" in r for r in rs):
            s["seconds"] = sum(r["seconds"] for r in rs)
            s["kbps"] = sum(r["kbps"] * r["seconds"] for r in rs) / s["seconds"]
        for k in METRICS:
            vals = [r[k] for r in rs if not math.isnan(r[k])]
            s[k] = float(np.mean(vals)) if vals else float("nan")
        out[name] = s
    return out


def write_csv(rows: list, path: Path) -> None:
    """The per-file rows as CSV."""
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(summary, path):
    """Rate–distortion curves: each metric against real kbps, one line per codec family."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    labels = {"mel": "mel distance ↓", "stft": "STFT distance ↓", "sisdr": "SI-SDR (dB) ↑", "visqol": "ViSQOL ↑"}
    families = dict.fromkeys(s["family"] for s in summary.values())
    for ax, k in zip(axes.flat, METRICS):
        for fam in families:
            pts = sorted((s["kbps"], s[k]) for s in summary.values() if s["family"] == fam and not math.isnan(s[k]))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=fam)
        ax.set_xlabel("real bitrate (kbps)")
        ax.set_title(labels[k])
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary):
    cols = ("kbps", "mel", "stft", "sisdr", "visqol", "bitrate_efficiency")
    head = f"{'codec':<28}" + "".join(f"{c:>12}" for c in ("kbps", "mel↓", "stft↓", "si-sdr↑", "visqol↑", "efficiency"))
    lines = [head]
    for name, s in summary.items():
        cells = "".join(f"{s[c]:>12.3f}" if c in s and not math.isnan(s[c]) else f"{'–':>12}" for c in cols)
        lines.append(f"{name:<28}{cells}")
    return "\n".join(lines)
