"""Training and held-out sets of real recordings (speech, music, environmental sound), built from
Debian packages so that anyone can rebuild them bit for bit from the same package versions.

    python -m dacli.training.corpus train   OUT_DIR      # ~5 h for training         (make corpus)
    python -m dacli.training.corpus heldout OUT_DIR      # ~2 min for evaluation, from other packages
    python -m dacli.training.corpus check train OUT_DIR  # exit 0 if OUT_DIR is a complete build of today's definition

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache
(``$DACLI_CORPUS_CACHE``, default ~/.cache/dacli/corpus-cache); nothing is installed. Output:
``OUT_DIR/{speech,music,env}/<source>_<nnn>.flac`` (mono, 44.1 kHz, 16-bit, loudness-normalised),
``OUT_DIR/manifest.tsv`` (every source segment: package, version, file, offsets, licence) and
``OUT_DIR/LICENSES/<package>.copyright``. Selection is seeded and sorted: deterministic.
"""

import glob
import io
import os
import random
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import audio

RATE = 44100
SEGMENT = 30.0


@dataclass
class Source:
    name: str
    package: str
    category: str            # speech | music | env
    patterns: tuple          # globs inside the unpacked package ("zip:" prefix: members of zip files)
    seconds: float           # budget
    licence: str
    mode: str = "bundle"     # bundle: concatenate short recordings; crop: random excerpts of long ones
    seed: int = 0
    segment: float = SEGMENT
    group_depth: int = 0     # bundle round-robin over the path component at this depth (e.g. language)
    full_band: bool = False  # skip recordings without content above 12 kHz (band-limited or upsampled)


# Budgets in seconds. Speech is the scarce kind of full-band recording, so it gets the largest share of
# what exists (Tux Paint's spoken stamp descriptions: 178 min at 44.1 kHz in many languages); music is
# plentiful and capped; environmental sound is what these Debian packages hold at full band (~1 h).
# In all 5.1 h (make corpus prints the minutes per source and kind).
# full_band: only recordings with content above 12 kHz (see _full_band) — the band-limited speech
# of festvox-ru (16 kHz) is the one deliberate exception, 2 minutes.
TRAIN = [
    # speech, ~125 min
    Source("tuxpaint-desc", "tuxpaint-stamps-default", "speech", ("usr/share/tuxpaint/stamps/**/*_desc*.ogg",),
           5700, "GPL-2 (Tux Paint stamps)", seed=1, full_band=True),
    Source("ktuberling", "ktuberling-data", "speech", ("usr/share/ktuberling/sounds/*/*.ogg",
                                                        "usr/share/ktuberling/sounds/*/*.wav"),
           900, "GPL-2+ / CC0 / CC-BY (per file, KDE)", seed=2, group_depth=-2, full_band=True),
    Source("gcin-voice", "gcin-voice", "speech", ("usr/share/gcin-voice/ogg/*/*.ogg",), 780,
           "GPL-3 / CC-BY-3 (per file)", seed=3, full_band=True),
    Source("festvox-ru", "festvox-ru", "speech", ("usr/share/festival/voices/russian/*/wav/*.wav",), 120,
           "GPL-3 / BSD-like (msu_ru_nsh voice database)", seed=4),
    # music, ~120 min
    Source("wesnoth-music", "wesnoth-1.16-music", "music", ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",),
           900, "GPL-2+", mode="crop", seed=5, full_band=True),
    Source("nexuiz-music", "nexuiz-music", "music", ("zip:usr/share/**/*.pk3",), 240, "GPL-2+", mode="crop", seed=6,
           full_band=True),
    Source("fof-muldjord", "fretsonfire-songs-muldjord", "music",
           ("usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg",), 240, "CC-BY-SA-3.0", mode="crop", seed=7,
           full_band=True),
    Source("sonic-pi", "sonic-pi-samples", "music", ("usr/share/sonic-pi/samples/*.flac",), 300,
           "CC0 / CC-BY-SA-4.0 (per file)", seed=8, full_band=True),
    Source("hydrogen-drums", "hydrogen-drumkits", "music", ("usr/share/hydrogen/data/drumkits/*/*.wav",
                                                            "usr/share/hydrogen/data/drumkits/*/*.flac"),
           150, "GPL-2+ / CC-BY(-SA)-3.0 / CC0 (per kit)", seed=9, group_depth=-2, full_band=True),
    Source("planetblupi-music", "planetblupi-music-ogg", "music", ("usr/share/planetblupi/music/*.ogg",), 1500,
           "GPL-3+ / Expat (per file, Planet Blupi)", mode="crop", seed=31, full_band=True),
    Source("ufoai-music", "ufoai-music", "music", ("zip:usr/share/games/ufoai/base/*.pk3",), 1500,
           "GPL-2+ / CC-BY-3.0 / CC-BY-SA-3.0 (per file, UFO: Alien Invasion)", mode="crop", seed=32, full_band=True),
    Source("drascula-music", "drascula-music", "music", ("usr/share/scummvm/drascula/audio/*.ogg",), 600,
           "Drascula-License (see its copyright file)", mode="crop", seed=33, full_band=True),
    Source("colobot-music", "colobot-common-sounds", "music", ("usr/share/games/colobot/music/*.ogg",), 900,
           "GPL-3+ / GPL-2+ / BSD (per file, Colobot)", mode="crop", seed=34, full_band=True),
    Source("hyperrogue-music", "hyperrogue-music", "music", ("usr/share/hyperrogue/music/*.ogg",), 450,
           "CC-BY-SA-3.0 / GPL-2+ (per file, HyperRogue)", mode="crop", seed=35, full_band=True),
    Source("lomiri-ringtones", "lomiri-sounds", "music", ("usr/share/sounds/lomiri/ringtones/*.ogg",), 240,
           "CC0-1.0 / CC-BY-3.0 / CC-BY-SA-3.0 / CC-BY-4.0 (per file, Lomiri)", mode="crop", seed=36, segment=15.0,
           full_band=True),
    Source("guitar-strums", "hydrogen-drumkits-effects", "music",
           ("usr/share/hydrogen/data/drumkits/belofilms_GuitarStrums/*.flac",), 240,
           "CC-BY-3.0 (belofilms_GuitarStrums drumkit)", seed=37, full_band=True),
    # environmental, ~58 min (about all these packages hold at full band;
    # the ambience excerpts (35 min) are drawn from 33 min of recordings, so a few overlap)
    Source("megaglest-ambience", "megaglest-data", "env", ("usr/share/games/megaglest/tilesets/*/sounds/*.ogg",
                                                           "usr/share/games/megaglest/tilesets/*/sounds/*.wav"),
           2100, "CC-BY-SA-3.0", mode="crop", seed=10, segment=20.0, full_band=True),
    Source("megaglest-sfx", "megaglest-data", "env", ("usr/share/games/megaglest/techs/**/*.wav",), 900,
           "CC-BY-SA-3.0", seed=11, full_band=True),
    Source("qabcs-noises", "qabcs-data", "env", ("usr/share/qabcs/abcs/all/noises/*.ogg",), 540,
           "GPL-3+ / CC0 / PD (per file)", seed=13, full_band=True),
    Source("colobot-sfx", "colobot-common-sounds", "env", ("usr/share/games/colobot/sounds/*.wav",), 100,
           "GPL-3+ / GPL-2+ / BSD (per file, Colobot)", seed=38, full_band=True),
    Source("hyperrogue-sfx", "hyperrogue-music", "env", ("usr/share/hyperrogue/sounds/*.ogg",), 140,
           "CC-BY-SA-4.0 (HyperRogue sounds/*)", seed=39, full_band=True),
    Source("lomiri-notifications", "lomiri-sounds", "env", ("usr/share/sounds/lomiri/notifications/*.ogg",), 24,
           "CC0-1.0 / CC-BY-SA-3.0 / CC-BY-4.0 (per file, Lomiri)", seed=40, full_band=True),
    Source("psi-plus-sounds", "psi-plus-sounds", "env", ("usr/share/psi-plus/sound/*.wav",), 15,
           "GPL-2+ / Expat / BSD (per file, Psi+)", seed=41, full_band=True),
]

HELDOUT = [
    Source("klettres", "klettres-data", "speech", ("usr/share/klettres/*/alpha/*.ogg",
                                                   "usr/share/klettres/*/syllab/*.ogg"),
           30, "GPL-2+ (KLettres sounds, KDE)", seed=21, segment=10.0, group_depth=-3),
    Source("etr-music", "extremetuxracer-data", "music", ("usr/share/games/etr/music/*.ogg",), 20,
           "GPL-2+ / CC-BY-SA (Extreme Tux Racer data)", mode="crop", seed=22, segment=10.0),
    Source("frozen-bubble-music", "frozen-bubble-data", "music", ("usr/share/games/frozen-bubble/snd/*zik*.ogg",),
           20, "GPL-2+ (Frozen Bubble)", mode="crop", seed=23, segment=10.0),
    Source("etr-sounds", "extremetuxracer-data", "env", ("usr/share/games/etr/sounds/*.wav",), 10,
           "GPL-2+ (Extreme Tux Racer data)", seed=24, segment=10.0),
    Source("frozen-bubble-sfx", "frozen-bubble-data", "env", ("usr/share/games/frozen-bubble/snd/*.ogg",), 10,
           "GPL-2+ (Frozen Bubble)", seed=25, segment=10.0),
]

SETS = {"train": TRAIN, "heldout": HELDOUT}


def cache_dir():
    return Path(os.environ.get("DACLI_CORPUS_CACHE", Path.home() / ".cache" / "dacli" / "corpus-cache"))


def fetch(package):
    """Download and unpack a Debian package into the cache → (unpacked root, version)."""
    debs, root = cache_dir() / "debs", cache_dir() / "x" / package
    debs.mkdir(parents=True, exist_ok=True)
    if not (root / ".version").exists():
        if not list(debs.glob(f"{package}_*.deb")):
            r = subprocess.run(["apt-get", "download", "-q", package], cwd=debs, capture_output=True, text=True)
            if r.returncode:
                subprocess.run(["apt-get", "update", "-q"], check=True)
                subprocess.run(["apt-get", "download", "-q", package], cwd=debs, check=True)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        (root / ".version").write_text(version)
    return root, (root / ".version").read_text()


def _files(root, patterns):
    out = []
    for pat in patterns:
        if pat.startswith("zip:"):
            for z in sorted(glob.glob(str(root / pat[4:]), recursive=True)):
                with zipfile.ZipFile(z) as zf:
                    out += [(z, m) for m in sorted(zf.namelist()) if m.lower().endswith((".ogg", ".wav", ".flac"))]
        else:
            out += sorted(f for f in glob.glob(str(root / pat), recursive=True) if os.path.isfile(f)
                          and not os.path.islink(f))
    return out


def _read(src, start=0.0, seconds=None):
    """Mono float32 at 44.1 kHz, or None if unreadable."""
    try:
        if isinstance(src, tuple):
            with zipfile.ZipFile(src[0]) as zf:
                f = io.BytesIO(zf.read(src[1]))
        else:
            f = src
        with sf.SoundFile(f) as s:
            rate = s.samplerate
            s.seek(int(start * rate))
            x = s.read(-1 if seconds is None else int(seconds * rate), dtype="float32", always_2d=True)
    except Exception:
        return None
    return audio.resample(x.mean(1), rate, RATE).astype(np.float32)


def _duration(src):
    try:
        if isinstance(src, tuple):
            with zipfile.ZipFile(src[0]) as zf:
                return sf.info(io.BytesIO(zf.read(src[1]))).duration
        return sf.info(src).duration
    except Exception:
        return 0.0


def _full_band(x, floor_db=-90.0, frame=8192):
    """Whether a 44.1 kHz recording has content above 12 kHz: the median over its frames (Hann,
    8,192 samples) of the energy there, relative to each frame's total, is at least ``floor_db``. Audio
    stored at 22.05 kHz or less and upsampled measured -139 to -155 dB (the frames at its ends, where a
    resampler rings, do not move the median); full-band speech -35 to -73 dB, effects -36 to -52 dB."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < frame:
        return False
    frames = x[:len(x) // frame * frame].reshape(-1, frame) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    high = power[:, np.fft.rfftfreq(frame, 1 / RATE) > 12000].sum(1)
    total = power.sum(1)
    sounding = total > 1e-12
    if not sounding.any():
        return False
    return bool(np.median(high[sounding] / total[sounding]) >= 10 ** (floor_db / 10))


def _trim(x, db=-45.0):
    e = np.abs(x)
    idx = np.nonzero(e > e.max() * 10 ** (db / 20))[0] if len(x) else []
    return x[max(0, idx[0] - int(0.02 * RATE)): idx[-1] + int(0.05 * RATE)] if len(idx) else x[:0]


PEAK_LIMIT = 0.89  # −1 dBFS: room for the inter-sample peaks that resampling and coding bring back


def _normalise(x, target=-20.0):
    loud = audio.loudness(x, RATE)
    y = x * audio.db_to_gain(target - loud) if loud > audio.MIN_LOUDNESS else x
    peak = np.abs(y).max() if len(y) else 0
    return (y * min(1.0, PEAK_LIMIT / peak) if peak else y).astype(np.float32)


def _name(src, root):
    return f"{os.path.relpath(src[0], root)}!{src[1]}" if isinstance(src, tuple) else os.path.relpath(src, root)


def definition(set_name):
    """sha256 of a set's source definitions: a built folder records it, so a changed definition is
    noticed (``check``) instead of training on a stale corpus."""
    import hashlib
    return hashlib.sha256(repr(SETS[set_name]).encode()).hexdigest()


def check(set_name, out):
    """Whether ``out`` holds a complete build of the current definition of ``set_name``."""
    stamp = Path(out) / "definition.sha256"
    return stamp.is_file() and stamp.read_text().strip() == definition(set_name)


class _Output:
    """A set being written: numbered FLAC files per category, the manifest rows, the minutes per kind."""

    def __init__(self, out):
        self.out, self.manifest, self.totals, self.counts = Path(out), [], {}, {}
        (self.out / "LICENSES").mkdir(parents=True, exist_ok=True)

    def emit(self, s, root, version, x, segs):
        """Write one recording ``x`` of source ``s`` made of ``segs`` (offset, source file, offset in it,
        seconds); returns its seconds (0 for anything under a second, which is dropped)."""
        if len(x) < RATE:
            return 0.0
        self.counts[s.name] = self.counts.get(s.name, 0) + 1
        rel = f"{s.category}/{s.name}_{self.counts[s.name]:03d}.flac"
        (self.out / s.category).mkdir(exist_ok=True)
        sf.write(self.out / rel, _normalise(x), RATE, subtype="PCM_16")
        for offset, src, src_offset, dur in segs:
            self.manifest.append((rel, f"{offset:.3f}", s.package, version, _name(src, root), f"{src_offset:.3f}",
                                  f"{dur:.3f}", s.licence))
        self.totals[s.category] = self.totals.get(s.category, 0) + len(x) / RATE
        return len(x) / RATE


def _crop(s, files, rng, emit):
    """Random excerpts of ``s.segment`` seconds from the long recordings, until the budget is spent."""
    done, k = 0.0, 0
    long = [f for f in files if _duration(f) > s.segment + 2]
    rng.shuffle(long)
    while done < s.seconds - 1 and long and k < 50 * len(long):
        src = long[k % len(long)]
        k += 1
        start = rng.uniform(0, _duration(src) - s.segment - 1)
        x = _read(src, start, min(s.segment, s.seconds - done))
        if x is not None and np.sqrt(np.mean(x ** 2)) > 1e-3 and (not s.full_band or _full_band(x)):
            done += emit(x, [(0.0, src, start, len(x) / RATE)])
    return done


def _bundle(s, files, rng, emit):
    """Short recordings, trimmed, concatenated with 0.25 s gaps into files of up to ``s.segment``
    seconds, round-robin over the groups (the path component at ``s.group_depth``)."""
    groups = {}
    for f in files:
        key = Path(f if isinstance(f, str) else f[1]).parts[s.group_depth] if s.group_depth else ""
        groups.setdefault(key, []).append(f)
    pools = [groups[g] for g in sorted(groups)]
    for p in pools:
        rng.shuffle(p)
    done, buf, segs, t = 0.0, [], [], 0.0
    while done + t < s.seconds and any(pools):
        for p in pools:
            if not p or done + t >= s.seconds:
                continue
            src = p.pop()
            x = _read(src)
            x = _trim(x) if x is not None else None
            if x is None or len(x) < int(0.2 * RATE) or (s.full_band and not _full_band(x)):
                continue
            x = x[:int(s.segment * RATE)]
            if t + len(x) / RATE > s.segment and buf:
                done += emit(np.concatenate(buf), segs)
                buf, segs, t = [], [], 0.0
            segs.append((t, src, 0.0, len(x) / RATE))
            buf += [x, np.zeros(int(0.25 * RATE), np.float32)]
            t += len(x) / RATE + 0.25
    if buf:
        done += emit(np.concatenate(buf), segs)
    return done


def build(set_name, out):
    """Build ``set_name`` ("train" or "heldout") into the folder ``out``."""
    output = _Output(out)
    for s in SETS[set_name]:
        root, version = fetch(s.package)
        take = _crop if s.mode == "crop" else _bundle
        done = take(s, _files(root, s.patterns), random.Random(s.seed),
                    lambda x, segs: output.emit(s, root, version, x, segs))
        cp = sorted(glob.glob(str(root / "usr/share/doc/*/copyright")))
        if cp:
            shutil.copy(cp[0], output.out / "LICENSES" / f"{s.package}.copyright")
        print(f"  {s.name:22s} {done / 60:5.1f} min", flush=True)
    with open(output.out / "manifest.tsv", "w") as f:
        f.write("file\toffset_in_file\tpackage\tversion\tsource\tsource_offset\tseconds\tlicence\n")
        f.writelines("\t".join(r) + "\n" for r in output.manifest)
    (output.out / "definition.sha256").write_text(definition(set_name) + "\n")  # last: the build is complete
    print(f"{set_name}: " + ", ".join(f"{c} {v / 60:.1f} min" for c, v in sorted(output.totals.items()))
          + f" ({sum(output.totals.values()) / 3600:.2f} h) → {output.out}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "check" and argv[1] in SETS:
        return 0 if check(argv[1], argv[2]) else 1
    if len(argv) != 2 or argv[0] not in SETS:
        print(__doc__, file=sys.stderr)
        return 2
    build(argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
