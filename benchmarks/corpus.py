"""Tokenizing a corpus of short real clips: hours of audio per hour, against the steady rate of one
long file, into .dac files and into a Parquet token dataset, all in one run on one machine.

    python benchmarks/corpus.py [--runs alone local ray official] [--formats dac parquet]
                                [--precisions default fp32] [--max-clips N] [--clips-dir DIR]
                                [--official-clips 15] [--alone-every 8] [--official-venv DIR] [--json OUT]

The clips (>= 300, 1-20 s) come from Debian packages (speech, sound effects, ringtones, game music,
fetched with ``apt-get download`` as ``make corpus`` does): files of 1-20 s as they are (Ogg Vorbis,
WAV; mono and stereo; 8 to 48 kHz), and excerpts of 1-20 s cut from longer ones (FLAC at the source's
rate and channels). Built once into --clips-dir (default ~/.cache/dacli/bench-clips), deterministically;
--max-clips takes an evenly spread subset. The model is the full-size 44.1 kHz architecture (random
weights: speed does not depend on them). Measured, each as a user would run it:

1. steady: one long file with ``codec.encode_file`` in this process (after a warm-up), mono (240 s)
   and stereo (120 s), in each precision: each run below is also given as the share of this rate, the
   time its clips would take at the steady rate of their channel count over the time taken;
2. one file at a time: every --alone-every'th clip through ``codec.encode_file`` in this process;
3. ``dacli encode CLIPS -o OUT [--format parquet]`` (the local engine, a fresh process, start-up included);
4. the same with ``--engine ray --workers 2`` on a 2-node Ray cluster on 127.0.0.1 (1 CPU each,
   ``ray.cluster_utils``); its fixed start-up (cluster join, a model per worker: the wall time of the
   same command on one 1 s clip) is reported apart, and its rate also without it;
5. the official CLI's loop (descript-audio-codec 1.0.0, one model, file after file) on a subset, when
   it is installed (benchmarks/install_official.sh).
Runs 3 and 4 go once per --formats and --precisions (default: the CPU's default precision, and fp32
when that is another); each gives bytes on disk and files written. In fp32 the codes of every form and
engine are compared (rows against .dac files, Ray against local). Needs the ``ray`` and ``parquet`` extras.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dacli import bench, codec
from dacli.model import build
from dacli.training.corpus import fetch

ROOT = Path(__file__).resolve().parent.parent
# package, file pattern, clips taken as they are, excerpts cut from each longer file
SOURCES = [
    ("klettres-data", "usr/share/klettres/**/*.ogg", 120, 0),
    ("ktuberling-data", "usr/share/ktuberling/sounds/**/*.*", 70, 0),
    ("qabcs-data", "usr/share/qabcs/**/*.ogg", 60, 0),
    ("lomiri-sounds", "usr/share/sounds/lomiri/**/*.ogg", 20, 2),
    ("frozen-bubble-data", "usr/share/games/frozen-bubble/snd/*.ogg", 10, 2),
    ("extremetuxracer-data", "usr/share/games/etr/**/*.*", 20, 2),
]
MIN_S, MAX_S = 1.0, 20.0
RUNS = ["alone", "local", "ray", "official"]  # besides the steady rate, always measured


def build_clips(out: Path) -> list:
    """The clip folder (built if missing) → its files."""
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rng = random.Random(0)
        for package, pattern, whole, cuts in SOURCES:
            root, _ = fetch(package)
            files = sorted(f for f in glob.glob(str(root / pattern), recursive=True)
                           if f.lower().endswith((".ogg", ".wav", ".flac")) and os.path.isfile(f) and not os.path.islink(f))
            rng.shuffle(files)
            taken = 0
            for k, f in enumerate(files):
                try:
                    info = sf.info(f)
                except RuntimeError:
                    continue
                if MIN_S <= info.duration <= MAX_S and taken < whole:
                    shutil.copyfile(f, out / f"{package}_{k:04d}{Path(f).suffix.lower()}")
                    taken += 1
                elif info.duration > MAX_S and cuts:
                    x, rate = sf.read(f, dtype="float32", always_2d=True)
                    for c in range(cuts):
                        n = int(rng.uniform(MIN_S, MAX_S) * rate)
                        start = rng.randrange(0, len(x) - n)
                        sf.write(out / f"{package}_{k:04d}_{c}.flac", x[start:start + n], rate, subtype="PCM_16")
        done.write_text("ok\n")
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def describe_clips(clips: list) -> dict:
    infos = [sf.info(str(c)) for c in clips]
    d = np.array([i.duration for i in infos])
    return {"clips": len(clips), "seconds": float(d.sum()),
            "seconds_by_channels": {ch: float(sum(i.duration for i in infos if i.channels == ch))
                                    for ch in sorted({i.channels for i in infos})},
            "min_s": float(d.min()), "median_s": float(np.median(d)),
            "max_s": float(d.max()), "stereo": sum(i.channels == 2 for i in infos),
            "not_44100": sum(i.samplerate != 44100 for i in infos),
            "rates": sorted({i.samplerate for i in infos})}


def timed(cmd, env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def ray_run(cmds, tmp: Path) -> list:
    """A local 2-node Ray cluster on 127.0.0.1 (a head and one more node, 1 CPU each, small object
    stores, a home folder of its own); each command of ``cmds`` with ``--engine ray --workers 2
    --address`` it; the cluster shut down → the commands' wall times."""
    home = tmp / "ray-home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_ip_address="127.0.0.1",
                                                                object_store_memory=200 << 20, include_dashboard=False))
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=200 << 20)
        cluster.wait_for_nodes()
        return [timed(cmd + ["--engine", "ray", "--address", cluster.address, "--workers", "2"], dict(os.environ))
                for cmd in cmds]
    finally:
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compare(tmp: Path, prec: str, formats, runs) -> dict:
    """Whether every fp32 run holds the same codes for every clip: each engine's .dac files and rows."""
    import dacli
    got, compared = {}, []
    for eng in ("local", "ray"):
        for fmt in formats:
            out = tmp / f"{eng}-{fmt}-{prec}"
            if eng not in runs or not out.is_dir():
                continue
            compared.append(f"{eng}/{fmt}")
            if fmt == "dac":
                got[eng, fmt] = {f.stem: dacli.read_codes(f)[0] for f in out.glob("*.dac")}
            else:
                got[eng, fmt] = {Path(r["path"]).stem: r["codes"] for r in dacli.read_dataset(out)}
    ref = next(iter(got.values()), {})
    equal = all(d.keys() == ref.keys() and all(np.array_equal(d[k], ref[k]) for k in ref) for d in got.values())
    return {"compared": compared, "equal": equal}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips-dir", default=str(Path.home() / ".cache/dacli/bench-clips"))
    ap.add_argument("--official-clips", type=int, default=15)
    ap.add_argument("--alone-every", type=int, default=8, help="one clip in this many for the one-at-a-time pass")
    ap.add_argument("--official-venv", default=os.environ.get("DACLI_OFFICIAL_VENV",
                                                              str(Path.home() / ".cache/dacli/official/venv")))
    ap.add_argument("--runs", nargs="+", default=RUNS, choices=RUNS, help="what to measure (default: all)")
    ap.add_argument("--formats", nargs="+", default=["dac", "parquet"], choices=["dac", "parquet"])
    ap.add_argument("--precisions", nargs="+", default=["default", "fp32"], choices=["default", "fp32", "mixed", "bf16"])
    ap.add_argument("--max-clips", type=int, default=None, help="an evenly spread subset of this many clips")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    res = {"machine": bench.machine()}
    print(f"machine: {bench.describe_machine(res['machine'])}; torch threads {torch.get_num_threads()}", flush=True)
    clips = build_clips(Path(args.clips_dir))
    if args.max_clips and args.max_clips < len(clips):
        clips = [clips[i * len(clips) // args.max_clips] for i in range(args.max_clips)]
    res["corpus"] = c = describe_clips(clips)
    hours = c["seconds"] / 3600
    print(f"corpus: {c['clips']} clips, {c['seconds'] / 60:.1f} min, {c['min_s']:.1f}-{c['max_s']:.1f} s (median "
          f"{c['median_s']:.1f} s), {c['stereo']} stereo, {c['not_44100']} not at 44.1 kHz {c['rates']}", flush=True)
    model = bench.make_model("44khz-8kbps", "cpu", "auto")
    res["precision"] = default = model.precision
    precisions = list(dict.fromkeys(default if p == "default" else p for p in args.precisions))
    print(f"precisions: {precisions} (the default here is {default})", flush=True)
    rates, shares, extra = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = tmp / "clips"  # the clips measured, linked into one folder
        clip_dir.mkdir()
        for f in clips:
            os.symlink(f, clip_dir / f.name)
        checkpoint = tmp / "full44.pth"
        torch.manual_seed(0)
        torch.save(build("44khz-8kbps").checkpoint(), checkpoint)  # the same random weights, for the CLI
        steady = {}
        for prec in precisions:
            model = bench.make_model(str(checkpoint), "cpu", prec)
            codec.encode_file(model, bench.test_audio(tmp / "warm.wav", 10.0, 1), tmp / "warm.dac")
            for channels, seconds in ((1, 240.0), (2, 120.0)):
                long_file = bench.test_audio(tmp / f"long{channels}.wav", seconds, channels,
                                             ROOT / "tests/fixtures/music20s.flac")
                t = time.perf_counter()
                codec.encode_file(model, long_file, tmp / "long.dac")
                steady[prec, channels] = seconds / (time.perf_counter() - t)
                print(f"steady ({prec}, one {seconds:.0f} s file, {channels} channel(s)): "
                      f"{steady[prec, channels]:.2f} hours per hour", flush=True)
        res["steady_hours_per_hour"] = {f"{p}/{ch}": v for (p, ch), v in steady.items()}

        def share(clip_set: dict, seconds: float, prec: str) -> float:
            """The time these clips take at the steady rate of their channel count / the time taken."""
            at_steady = sum(s / (steady[prec, ch] if (prec, ch) in steady else steady[prec, 1] / ch)
                            for ch, s in clip_set["seconds_by_channels"].items())
            return at_steady / seconds
        t = time.perf_counter()
        (tmp / "alone").mkdir()
        some = clips[::args.alone_every] if "alone" in args.runs else []
        for i, f in enumerate(some):
            codec.encode_file(model, f, tmp / "alone" / f"{i}.dac")
        t = time.perf_counter() - t
        if some:
            key = f"one_at_a_time/{model.precision}"
            rates[key] = describe_clips(some)["seconds"] / t
            shares[key] = share(describe_clips(some), t, model.precision)
            print(f"one file at a time (codec.encode_file, {len(some)} clips): {rates[key]:.2f} hours per hour",
                  flush=True)
        del model
        one = tmp / "one"  # the Ray engine's fixed start-up: the same command on one 1 s clip
        one.mkdir()
        bench.test_audio(one / "one.wav", 1.0, 1)

        def cmd(src, out, fmt, prec):
            return [sys.executable, "-m", "dacli", "encode", str(src), "-o", str(out), "--model", str(checkpoint),
                    "--quiet", "--format", fmt, "--precision", prec]

        def record(key, t, fmt, prec, out, startup=None):
            rates[key], shares[key] = hours / (t / 3600), share(c, t, prec)
            files = [f for f in out.rglob("*") if f.is_file() and not f.name.startswith("dacli-report")]
            extra[key] = {"seconds": t, "bytes": sum(f.stat().st_size for f in files), "files": len(files)}
            line = f"{key}: {rates[key]:.2f} hours per hour, {len(files)} files, {extra[key]['bytes'] / 1e6:.2f} MB"
            if startup is not None:
                extra[key].update(startup_s=startup, hours_per_hour_after_startup=hours / ((t - startup) / 3600))
                line += (f"; fixed start-up {startup:.1f} s, "
                         f"{extra[key]['hours_per_hour_after_startup']:.2f} hours per hour after it")
            print(line, flush=True)

        combos = [(fmt, prec) for prec in precisions for fmt in args.formats]
        if "local" in args.runs:
            for fmt, prec in combos:
                out = tmp / f"local-{fmt}-{prec}"
                record(f"local/{fmt}/{prec}", timed(cmd(clip_dir, out, fmt, prec)), fmt, prec, out)
        if "ray" in args.runs:
            cmds = []
            for fmt, prec in combos:
                cmds += [cmd(one, tmp / f"one-{fmt}-{prec}", fmt, prec), cmd(clip_dir, tmp / f"ray-{fmt}-{prec}", fmt, prec)]
            times = ray_run(cmds, tmp)
            for i, (fmt, prec) in enumerate(combos):
                record(f"ray/{fmt}/{prec}", times[2 * i + 1], fmt, prec, tmp / f"ray-{fmt}-{prec}", times[2 * i])
        if "fp32" in precisions:
            res["same_codes_fp32"] = same = compare(tmp, "fp32", args.formats, args.runs)
            print(f"fp32 codes equal across {', '.join(same['compared'])}: {same['equal']}", flush=True)
        for fmt in args.formats:
            for prec in precisions:
                for eng in ("local", "ray"):
                    if f"{eng}/parquet/{prec}" in rates and f"{eng}/dac/{prec}" in rates:
                        r = rates[f"{eng}/parquet/{prec}"] / rates[f"{eng}/dac/{prec}"]
                        extra[f"{eng}/{prec}/parquet_over_dac"] = r
                        if fmt == "parquet":
                            print(f"{eng} {prec}: Parquet at {r:.3f} of the .dac output's rate", flush=True)
        py = Path(args.official_venv) / "bin" / "python"
        if "official" not in args.runs:
            pass
        elif py.exists() and args.official_clips:
            subset = clips[::max(1, len(clips) // args.official_clips)][:args.official_clips]
            (tmp / "list.txt").write_text("\n".join(map(str, subset)) + "\n")
            (tmp / "official").mkdir()
            seconds = timed([str(py), str(ROOT / "benchmarks/official_phase.py"), "encode-files", str(tmp / "list.txt"),
                             str(tmp / "official")])
            rates["official"] = describe_clips(subset)["seconds"] / seconds
            shares["official"] = share(describe_clips(subset), seconds, "fp32" if "fp32" in precisions else default)
            print(f"official CLI loop ({len(subset)} clips): {rates['official']:.2f} hours per hour", flush=True)
        else:
            print(f"official package not found in {args.official_venv}: skipped", flush=True)
    res["hours_per_hour"], res["share_of_steady"], res["runs"] = rates, shares, extra
    for k in shares:
        print(f"{k}: {rates[k]:.2f} hours of audio per hour, {shares[k] * 100:.0f} % of dacli's steady rate "
              f"(the time its clips take at the steady rate of their channel count / the time taken)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
