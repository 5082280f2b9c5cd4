"""Continue the bundled model's training run on a lent GPU for a few minutes, and bring it back.

The device machine that is sometimes lent to a session takes 64 MiB of files and reaches nothing else,
so the 5-hour corpus cannot travel: ``prepare`` packs the run's exported state (generator + compact
training state, without the 10 MB weight average, which restarts from the weights) with a subset of
the corpus (spans drawn as the trainer draws excerpts: files weighted by length), the fixed validation
batch of the CPU run (same draw, so the two curves compare) and a fixed batch from the subset (how
well the run fits what it trains on). ``train`` runs on the GPU machine until a deadline, logs both
batches every ``--every`` steps, and writes the final export (and the average at the best validation
point) in pieces small enough to come back; ``collect`` joins the pieces here.

    python benchmarks/gpu_continue.py prepare .gpu --corpus data/train --run data/runs/bundled --mb 26
    python benchmarks/gpu_continue.py train .gpu --seconds 420 --out $OUT        # on the GPU machine
    python benchmarks/gpu_continue.py collect FILES_AT /tmp/gpu                   # here

The tracked tree is too large to travel as well (weights/ and tests/fixtures, 77 MB): for the call
take them out of the index and ignore them (``git rm -r -q --cached weights tests/fixtures`` and the
two paths in .git/info/exclude; the files stay on disk), carry ``.gpu`` and the wheels, then remove the
two lines and ``git reset -q``. Sitting 14 of weights/README.md has the result.

The GPU machine's Python (3.12) has torch but not soundfile, soxr or zstandard: ``train`` stubs the
last two (no resampling or container work happens there); soundfile travels as wheels (soundfile,
cffi, pycparser for cp312 manylinux, in an ignored ``.whl``), installed by the command that runs it:
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl`` and ``PYTHONPATH=/tmp/site:$PWD``.
"""

import argparse
import json
import shutil
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

PIECE = 15 << 20  # bytes per file that comes back (the tool takes at most 16 MiB per file)


def prepare(args):
    import soundfile as sf
    import torch

    from dacli.train import CONFIGS, TrainingAudio, Trainer, resume_path

    out = Path(args.dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    (out / "state").mkdir()
    weights = Path(args.run) / "weights_latest.pth"
    shutil.copy(weights, out / "state" / "weights.pth")
    st = torch.load(resume_path(weights), map_location="cpu", weights_only=True)
    st.pop("ema_delta", None)
    torch.save(st, out / "state" / "weights.train.pt")
    step = st["step"]

    trainer = Trainer(CONFIGS["bundled"])
    corpus = TrainingAudio(args.corpus, 44100, quiet_share=0.0)
    val = corpus.batch(np.random.default_rng(12345), 16, trainer.n, quiet_share=0.0)  # as the CPU run's
    np.save(out / "val.npy", val.numpy())

    rng = np.random.default_rng(args.seed)
    budget, used, spans = args.mb * 1e6, 0, 0
    span = int(args.span * 44100)
    while used < budget:
        i = rng.choice(len(corpus.clips), p=corpus.weights)
        c = corpus.clips[i]
        start = int(rng.integers(0, max(1, len(c) - span)))
        x = c[start:start + span]
        if np.abs(x).max() < 1e-4:  # digital silence teaches nothing in so little data
            continue
        p = out / "data" / f"span_{spans:04d}.flac"
        sf.write(p, x, 44100, subtype="PCM_16")
        used += p.stat().st_size
        spans += 1
    print(f"step {step}: {spans} spans of {args.span} s ({spans * args.span / 60:.1f} min, "
          f"{used / 1e6:.1f} MB) from {corpus.seconds / 60:.0f} min; folder {out}")


def _stub_missing():
    """soxr and zstandard are imported by dacli's audio and container modules but unused here."""
    for name in ("soxr", "zstandard"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)


def train(args):
    _stub_missing()
    import torch

    from dacli.train import CONFIGS, TrainingAudio, Trainer, ema_path, validate

    src = Path(args.dir)
    device = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "w")

    def say(rec):
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    t_start = time.time()
    trainer = Trainer(CONFIGS["bundled"], precision=args.precision, fused_snake=False, channels_last=False)
    say({"init": trainer.init_generator(str(src / "state" / "weights.pth"))})
    trainer.to(device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        say({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__})
    corpus = TrainingAudio(src / "data", 44100, quiet_share=trainer.cfg.get("quiet_share", 0.0))
    val = torch.from_numpy(np.load(src / "val.npy")).to(device)
    fit = corpus.batch(np.random.default_rng(54321), 16, trainer.n, quiet_share=0.0).to(device)
    say({"corpus_min": round(corpus.seconds / 60, 2), "setup_s": round(time.time() - t_start, 1)})

    def measure(gen):
        return [round(validate(gen, b), 4) for b in (val, fit)]

    def evaluate():
        rec = {"step": trainer.step}
        rec["val"], rec["fit"] = measure(trainer.gen)
        with trainer.averaged() as gen:
            rec["val_ema"], rec["fit_ema"] = measure(gen)
        return rec

    best = None
    first = evaluate()
    say(first | {"note": "start (average = weights: it restarts here)"})
    deadline = time.time() + args.seconds
    t0, n0 = None, 0
    # excerpts are drawn (on the CPU) one batch ahead in a thread, while the GPU runs the step
    pool = ThreadPoolExecutor(1)

    def draw():
        batch = corpus.batch(trainer.rng, trainer.cfg["batch"], trainer.n)
        return batch.pin_memory() if device == "cuda" else batch
    ahead = [pool.submit(draw) for _ in range(3)]
    while time.time() < deadline:
        batch = ahead.pop(0).result()
        ahead.append(pool.submit(draw))
        logs = trainer.train_step(batch)
        if t0 is None and trainer.step - first["step"] == 20:  # warm-up (cudnn autotuning) excluded
            if device == "cuda":
                torch.cuda.synchronize()
            t0, n0 = time.time(), trainer.step
        if trainer.step % 100 == 0:
            say({k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items()})
        if trainer.step % args.every == 0:
            rec = evaluate()
            if t0 is not None:
                rec["steps_per_s"] = round((trainer.step - n0) / (time.time() - t0), 2)
            say(rec)
            # the average is only worth keeping once it has forgotten its restart (~3 time constants)
            if trainer.step - first["step"] >= 3000 and (best is None or rec["val_ema"] < best[0]):
                with trainer.averaged() as gen:
                    best = (rec["val_ema"], trainer.step, gen.checkpoint())
    if device == "cuda":
        torch.cuda.synchronize()
    rec = evaluate()
    rec["steps_per_s"] = round((trainer.step - n0) / (time.time() - t0), 2) if t0 else None
    say(rec | {"note": "end"})
    trainer.to("cpu")
    tmp = Path("/tmp/gpu_export")
    tmp.mkdir(exist_ok=True)
    trainer.export(tmp / "weights.pth")
    files = [tmp / "weights.pth", tmp / "weights.train.pt"]
    if best is not None and best[1] != trainer.step:
        best[2]["metadata"]["dacli"] = {"step": best[1], "ema": trainer.ema_decay}
        torch.save(best[2], tmp / f"best_ema_{best[1]}.pth")
        files.append(tmp / f"best_ema_{best[1]}.pth")
    else:
        files.append(ema_path(tmp / "weights.pth"))
    for f in files:
        data = f.read_bytes()
        for k in range(0, len(data), PIECE):
            (out / f"{f.name}.{k // PIECE}").write_bytes(data[k:k + PIECE])
    say({"written": [f.name for f in files], "total_s": round(time.time() - t_start, 1)})


def collect(args):
    src, dst = Path(args.files_at), Path(args.dst)
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted({p.name.rsplit(".", 1)[0] for p in src.glob("*.[0-9]")})
    for name in names:
        parts = sorted(src.glob(f"{name}.[0-9]"), key=lambda p: int(p.suffix[1:]))
        (dst / name).write_bytes(b"".join(p.read_bytes() for p in parts))
        print(dst / name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir")
    p.add_argument("--corpus", default="data/train")
    p.add_argument("--run", default="data/runs/bundled")
    p.add_argument("--mb", type=float, default=24.0, help="size of the corpus subset (FLAC)")
    p.add_argument("--span", type=float, default=3.0, help="seconds per span")
    p.add_argument("--seed", type=int, default=2026)
    p = sub.add_parser("train")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=420)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p = sub.add_parser("collect")
    p.add_argument("files_at")
    p.add_argument("dst")
    args = ap.parse_args()
    {"prepare": prepare, "train": train, "collect": collect}[args.cmd](args)


if __name__ == "__main__":
    main()
