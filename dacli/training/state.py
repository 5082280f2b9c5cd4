"""A run on disk: the full training state (resumes exactly), the exported weights in the official
checkpoint layout, and beside them the compact training state that lets a fresh clone continue the run
(``NAME.pth`` → ``NAME.train.pt``) and the averaged weights (``NAME.ema.pth``)."""

from pathlib import Path
import random

import numpy as np
import torch

from ..errors import DacliError
from ..fileio import atomic_output
from ..model import load_checkpoint, weights_hash
from .trainer import Trainer

COMPACT_STATE_FORMAT = "dacli-train-state-1"


def resume_path(weights_path) -> Path:
    """Where the compact training state of a weights file lives: ``NAME.pth`` → ``NAME.train.pt``."""
    return Path(weights_path).with_suffix(".train.pt")


def ema_path(weights_path) -> Path:
    """Where the averaged weights exported with a weights file live: ``NAME.pth`` → ``NAME.ema.pth``."""
    return Path(weights_path).with_suffix(".ema.pth")


def step_of(weights_path) -> int:
    """The training step an exported weights file records (0 when it records none)."""
    meta = torch.load(weights_path, map_location="cpu", weights_only=True)["metadata"]
    return int(meta.get("dacli", {}).get("step", 0))


def full_state(t: Trainer) -> dict:
    """Everything needed to resume exactly: models, optimisers, schedules, step, average, random states."""
    return {"step": t.step, "cfg": t.cfg, "gen": t.gen.state_dict(), "disc": t.disc.state_dict(),
            "opt_g": t.opt_g.state_dict(), "opt_d": t.opt_d.state_dict(),
            "sched_g": t.sched_g.state_dict(), "sched_d": t.sched_d.state_dict(),
            "rng": t.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "py_rng": random.getstate(), "ema": t.ema}


def load_full_state(t: Trainer, st: dict) -> None:
    t.step = st["step"]
    t.gen.load_state_dict(st["gen"])
    t.disc.load_state_dict(st["disc"])
    t.opt_g.load_state_dict(st["opt_g"])
    t.opt_d.load_state_dict(st["opt_d"])
    t.sched_g.load_state_dict(st["sched_g"])
    t.sched_d.load_state_dict(st["sched_d"])
    t.ema = None if st["ema"] is None else [e.clone() for e in st["ema"]]
    t.rng.bit_generator.state = st["rng"]
    torch.set_rng_state(st["torch_rng"])
    random.setstate(st["py_rng"])


def save(t: Trainer, path) -> None:
    """Write :func:`full_state` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        torch.save(full_state(t), tmp)


def compact_state(t: Trainer, generator_state=None) -> dict:
    """The committable part of the training state: everything but the generator (which is the exported
    weights file) and the random states, in bf16. Kept: discriminator weights and both optimisers'
    second moments (AdamW's beta2 = 0.99 remembers ~100 steps, and they set each parameter's step size),
    the discriminators' first moments (small), the average as its difference to the weights, step and
    learning rates. Left out: the generator's first moments (beta1 = 0.8 remembers ~5 steps; resumed
    as zeros, which only shrinks the first few updates), which halves the file. ``generator_state``: the
    generator's checkpoint state dict when the caller has already made it (its hash is stored)."""
    def moments(opt, keep):
        sd = opt.state_dict()
        return {"state": {i: {k: (v.to(torch.bfloat16) if k.startswith("exp_avg") else v)
                              for k, v in s.items() if k == "step" or k in keep}
                          for i, s in sd["state"].items()},
                "param_groups": sd["param_groups"]}
    if generator_state is None:
        generator_state = t.gen.checkpoint()["state_dict"]
    ema = {} if t.ema is None else {
        "ema_delta": {n: (e - p.detach()).to(torch.bfloat16) for (n, p), e in zip(t.gen.named_parameters(), t.ema)}}
    return {"format": COMPACT_STATE_FORMAT, "step": t.step, "generator_sha256": weights_hash(generator_state), **ema,
            "disc": {k: v.to(torch.bfloat16) for k, v in t.disc.state_dict().items()},
            "opt_g": moments(t.opt_g, {"exp_avg_sq"}), "opt_d": moments(t.opt_d, {"exp_avg", "exp_avg_sq"}),
            "sched_g": t.sched_g.state_dict(), "sched_d": t.sched_d.state_dict()}


def load_compact_state(t: Trainer, st: dict) -> None:
    if st.get("format") != COMPACT_STATE_FORMAT:
        raise DacliError(f"training state format {st.get('format')!r} is not {COMPACT_STATE_FORMAT!r}")
    t.step = st["step"]
    t.disc.load_state_dict({k: v.float() for k, v in st["disc"].items()})

    def moments(opt, saved):
        params = [p for g in opt.param_groups for p in g["params"]]
        state = {}
        for i, s in saved["state"].items():
            ref = params[int(i)]
            state[i] = {"step": s["step"],
                        **{k: s[k].float() if k in s else torch.zeros_like(ref) for k in ("exp_avg", "exp_avg_sq")}}
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    moments(t.opt_g, st["opt_g"])
    moments(t.opt_d, st["opt_d"])
    t.sched_g.load_state_dict(st["sched_g"])
    t.sched_d.load_state_dict(st["sched_d"])
    t.reset_ema(st.get("ema_delta"))
    t.rng = np.random.default_rng(t.step)  # a fresh draw of excerpts, seeded by the step


def export(t: Trainer, path) -> None:
    """The generator in the official checkpoint layout (no optimiser state), and beside it the compact
    training state (:func:`compact_state`) and the averaged weights (:func:`ema_path`) where the
    configuration keeps an average."""
    ck = t.gen.checkpoint()
    ck["metadata"]["dacli"] = {"step": t.step}
    files = [(ck, Path(path)), (compact_state(t, ck["state_dict"]), resume_path(path))]
    if t.ema is not None:
        with t.averaged() as gen:
            avg = gen.checkpoint()
        avg["metadata"]["dacli"] = {"step": t.step, "ema": t.ema_decay}
        files.append((avg, ema_path(path)))
    for obj, dst in files:
        with atomic_output(dst) as tmp:
            torch.save(obj, tmp)


def schedule_to(sched, step: int) -> None:
    """Put an exponential schedule and its optimiser's learning rates where they are after ``step``
    steps from each group's initial rate."""
    lrs = [g["initial_lr"] * sched.gamma ** step for g in sched.optimizer.param_groups]
    for g, lr in zip(sched.optimizer.param_groups, lrs):
        g["lr"] = lr
    sched.load_state_dict(sched.state_dict() | {"last_epoch": step, "_last_lr": lrs,
                                                "base_lrs": [g["initial_lr"] for g in sched.optimizer.param_groups]})


def init_generator(t: Trainer, path) -> str:
    """Start the generator from exported weights. If the training state exported beside them
    (:func:`resume_path`) exists and belongs to these weights, the discriminators, optimiser moments,
    step and learning rates continue from it; otherwise they start fresh. Returns what was done."""
    src = load_checkpoint(path)
    if src.kwargs | {"quantizer_dropout": 0} != t.gen.kwargs | {"quantizer_dropout": 0}:
        raise DacliError(f"{path}: kwargs {src.kwargs} differ from the config's {t.gen.kwargs}")
    t.gen.load_state_dict(src.state_dict())
    t.reset_ema()
    companion = resume_path(path)
    if not companion.exists():
        t.step = step_of(path)
        for sched in (t.sched_g, t.sched_d):
            schedule_to(sched, t.step)  # where the exported run was
        t.rng = np.random.default_rng(t.step)
        return f"generator initialised from {path} at step {t.step}; discriminators and optimisers start fresh"
    st = torch.load(companion, map_location="cpu", weights_only=True)
    if st["generator_sha256"] != src.weights_hash:
        raise DacliError(f"{companion} belongs to other generator weights than {path}")
    load_compact_state(t, st)
    return f"resumed at step {t.step} from {path} and {companion}"
