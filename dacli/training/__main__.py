"""The training command line: train (or resume) a run, or promote its exported weights.

    python -m dacli.training --data CORPUS_DIR --run RUN_DIR [--config bundled] [--steps N]
                             [--init weights/x.pth] [--export-every 500]
    python -m dacli.training --promote RUN/weights_latest.pth    # the next bundled version

The run folder holds ``state.pt`` (everything needed to resume exactly), ``log.jsonl`` and exported
generator weights in the official checkpoint layout (``weights_latest.pth``, with the compact training
state and the averaged weights beside it). Run it again with the same ``--run`` to resume. SIGTERM or
Ctrl-C finishes the step, saves and exports. Errors print one line and exit with status 2.
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DacliError
from ..runtime.hardware import PRECISIONS
from ..runtime.snake import FusedSnake1d
from . import state
from .config import CONFIGS
from .data import TrainingAudio
from .release import head_carrying, promote
from .trainer import Trainer, validate


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m dacli.training", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder of training audio")
    ap.add_argument("--run", help="run folder (state, log, exported weights)")
    ap.add_argument("--promote", metavar="WEIGHTS",
                    help="instead of training: make these exported weights the next bundled version")
    ap.add_argument("--config", default="bundled", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=10 ** 9, help="stop after this many total steps")
    ap.add_argument("--hours", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--init", help="start the generator from these weights (and the training state beside them)")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--export-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                    help="bf16 autocast for the convolutions; auto: bf16 where the CPU computes it natively")
    args = ap.parse_args(argv)
    if not args.promote and not (args.data and args.run):
        ap.error("--data and --run are required to train")
    return args


def release(weights) -> str:
    """Promote ``weights`` to the next bundled version; returns what to tell the user."""
    from ..registry import WEIGHTS_DIR
    table = json.loads((WEIGHTS_DIR / "VERSIONS.json").read_text())
    name = promote(weights, WEIGHTS_DIR, head_carrying(WEIGHTS_DIR / table["file"]))
    return f"{WEIGHTS_DIR / table['file']} is now {name}; update the model card and commit both files"


def start(args) -> Trainer:
    """The trainer of ``args.run``: resumed from its state, else from ``--init`` (or this run's last
    export, where that got further), else fresh."""
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(CONFIGS[args.config], precision=args.precision)
    if (run / "state.pt").exists():
        state.load_full_state(trainer, torch.load(run / "state.pt", weights_only=False))
        print(f"resumed at step {trainer.step}", flush=True)
    elif args.init:
        init = args.init
        latest = run / "weights_latest.pth"
        if latest.exists() and state.resume_path(latest).exists() and state.step_of(latest) > state.step_of(init):
            init = latest
        print(state.init_generator(trainer, init), flush=True)
    return trainer


def describe(trainer: Trainer, corpus: TrainingAudio) -> str:
    fused = any(isinstance(m, FusedSnake1d) for m in trainer.gen.modules())
    return (f"corpus: {len(corpus.clips)} files, {corpus.seconds / 60:.1f} min; "
            f"generator {sum(p.numel() for p in trainer.gen.parameters()) / 1e6:.2f} M params, "
            f"discriminator {sum(p.numel() for p in trainer.disc.parameters()) / 1e6:.2f} M; {trainer.precision}, "
            f"Snake {'fused' if fused else 'autograd'}, {'channels-last' if trainer.channels_last else 'channels-first'}"
            + (f", weights averaged (decay {trainer.ema_decay})" if trainer.ema is not None else ""))


def train(args) -> None:
    trainer = start(args)
    run = Path(args.run)
    corpus = TrainingAudio(args.data, trainer.gen.sample_rate, quiet_share=trainer.cfg.get("quiet_share", 0.0))
    print(describe(trainer, corpus), flush=True)
    val = corpus.batch(np.random.default_rng(12345), 16, trainer.n, quiet_share=0.0)
    stop: list = []  # SIGTERM / SIGINT: finish the step, then save and export as at the end of a run
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        loop(args, trainer, corpus, val, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state.save(trainer, run / "state.pt")
    state.export(trainer, run / "weights_latest.pth")
    print(f"stopped at step {trainer.step}; state saved, weights exported", flush=True)


def loop(args, trainer: Trainer, corpus: TrainingAudio, val: torch.Tensor, stop: list) -> None:
    """Train until ``--steps``, ``--hours`` or a signal; log, save and export on their schedules."""
    run = Path(args.run)
    t0 = time.time()
    deadline = t0 + 3600 * args.hours if args.hours else None
    with open(run / "log.jsonl", "a") as log:
        while trainer.step < args.steps and (deadline is None or time.time() < deadline) and not stop:
            ts = time.time()
            logs = trainer.train_step(corpus.batch(trainer.rng, trainer.cfg["batch"], trainer.n))
            logs["sec"] = round(time.time() - ts, 3)
            if trainer.step % args.log_every == 0:
                log.write(json.dumps(logs) + "\n")
                log.flush()
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()),
                      flush=True)
            if trainer.step % args.save_every == 0:
                state.save(trainer, run / "state.pt")
            if trainer.step % args.export_every == 0:
                rec = {"step": trainer.step, "val_mel": validate(trainer.gen, val)}
                if trainer.ema is not None:
                    with trainer.averaged() as gen:
                        rec["val_mel_ema"] = validate(gen, val)
                log.write(json.dumps(rec | {"hours": (time.time() - t0) / 3600}) + "\n")
                state.export(trainer, run / "weights_latest.pth")
                print(f"step {trainer.step}: validation mel distance {rec['val_mel']:.4f}"
                      + (f", averaged weights {rec['val_mel_ema']:.4f}" if "val_mel_ema" in rec else ""), flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.promote:
            print(release(args.promote))
        else:
            train(args)
    except DacliError as e:
        print(f"dacli.training: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
