"""Encoding a corpus on a Ray cluster (``dacli encode --engine ray``, or :func:`encode_corpus`).

The driver lists the inputs and names the outputs as the local batch does (:mod:`dacli.batch`:
collision-safe names, ``--shard``), settles what is already there (skipped unless ``overwrite``) and
the precision (``auto`` resolved once, here, for the whole run), and hands the rest to Ray Data: an
actor pool through ``map_batches``, one model per worker, workers on every node. Each worker encodes
the files of a call with :class:`dacli.codec.Tokenizer`, as the local engine does (their windows
packed together; the same atomic writer: an output exists only when complete), and returns the
:class:`~dacli.outcome.Outcome` of each file as a row. A worker that dies, or a node that leaves, has its files
retried elsewhere; a file whose output a dead worker already completed is not encoded again. The
driver prints progress and a summary and writes the run's report (:func:`dacli.batch.write_report`)
into the output folder. Ray is imported only here, and only for this engine.
"""

import contextlib
import logging
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from . import batch, codec, container, registry
from .errors import DacliError, first_line
from .outcome import FAILED, ROW, Outcome

INSTALL_HINT = "--engine ray needs Ray: pip install 'dacli[ray]'"
FILES_PER_TASK = 16  # files per map_batches call: a worker packs their windows together
MAX_RESTARTS = 8  # per worker, and retries per task: a worker that cannot start ends the run, not hangs it
# what the driver and a local instance need in the environment: usage statistics off, loopback only
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Ray's own chatter (execution plans, deprecations, its core's notices) stays out of dacli's output;
# what went wrong with a file comes back in its row
QUIET_RAY = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def _ray():
    for k, v in {**RAY_ENV, **QUIET_RAY}.items():
        os.environ.setdefault(k, v)
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DacliError(INSTALL_HINT) from None
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="ray")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*concurrent actors.*")
    return ray


class Worker:
    """A worker of the actor pool: loads the model once, then encodes the files of each call it is
    given. The run's settings are a class attribute (:func:`_worker_for`), so a restarted worker needs
    nothing from the object store."""

    settings: Dict = {}

    def __init__(self):
        import torch

        from .runtime import process
        process.tune_process()
        self.s = settings = self.settings
        torch.set_num_threads(settings["threads"])
        self.model = registry.load_model(settings["model"], settings["device"], settings["precision"])

    def __call__(self, rows: Dict[str, List]) -> Dict[str, List]:
        if self.s["format"] == "parquet":
            done = self._shard(dict(zip(rows["dst"], rows["src"])))
        else:
            tokenizer = codec.Tokenizer(self.model, self.s["n_codebooks"], self.s["window_seconds"],
                                        self.s["bandwidth"])
            done = []
            for src, dst in zip(rows["src"], rows["dst"]):
                if batch.already_done(Path(dst), self.s["overwrite"]):  # completed by a worker of this run that died
                    done.append(Outcome.done(src, dst, container.read_header(dst)))
                else:
                    done += tokenizer.submit(src, dst)
            done += tokenizer.finish()
        return {k: [o.row()[k] for o in done] for k in ROW}

    def _shard(self, todo: Dict[str, str]) -> List[Outcome]:
        """The inputs of one call (row path → input) as one shard, named after them: a call run again
        (its worker lost after writing) finds its shard complete and writes only what it lacks."""
        from . import dataset
        out, done = Path(self.s["out"]), []
        name = dataset.batch_name(self.s["tag"], list(todo))
        while (out / name).exists():
            done += dataset.stored(out / name, todo)
            for rel in dataset.paths(out / name):
                todo.pop(rel, None)
            if not todo:
                return done
            name = dataset.batch_name(self.s["tag"], list(todo))
        sink = dataset.ShardWriter(out, lambda seq: name, rows=len(todo) + 1, code_bytes=math.inf)
        tokenizer = codec.Tokenizer(self.model, self.s["n_codebooks"], self.s["window_seconds"], self.s["bandwidth"],
                                    sink=sink)
        for rel, src in todo.items():
            done += tokenizer.submit(src, rel)
        return done + tokenizer.finish()


def _worker_for(settings: Dict) -> type:
    return type("Worker", (Worker,), {"settings": dict(settings)})


def encode_corpus(inputs: Sequence[Union[str, Path]], output: Union[str, Path], *, model: Optional[str] = None,
                  kbps: Optional[float] = None, n_codebooks: Optional[int] = None, bandwidth: str = "auto",
                  precision: str = "auto", window_seconds: Optional[float] = None, overwrite: bool = False,
                  shard: Optional[str] = None, address: Optional[str] = None, workers: Optional[int] = None,
                  threads_per_worker: int = 1, gpus_per_worker: float = 0.0, quiet: bool = True,
                  fmt: str = "dac") -> Dict[str, int]:
    """Encode every audio file under ``inputs`` into the folder ``output`` on Ray (a running cluster at
    ``address``, else a local instance started and stopped here), as .dac files or (``fmt``
    "parquet") a token dataset, a shard per call → counts of ok, skipped and failed files. The report
    is ``output/dacli-report-*.tsv`` (beside a dataset folder: :func:`dacli.batch.report_path`)."""
    from . import dataset
    from .fileio import find_inputs, shard as shard_of
    if workers is not None and workers < 1:
        raise DacliError(f"--workers must be at least 1, not {workers}")
    if threads_per_worker < 1:
        raise DacliError(f"--threads-per-worker must be at least 1, not {threads_per_worker}")
    if not gpus_per_worker >= 0:
        raise DacliError(f"--gpus-per-worker must be 0 or more, not {gpus_per_worker}")
    output = Path(output)
    found = find_inputs([Path(i) for i in inputs], batch.AUDIO_IN)
    if fmt == "parquet":
        if overwrite:
            raise DacliError("--overwrite does not apply to --format parquet")
        held, made = dataset.prepare(output)  # before any input is read
        pairs = shard_of(dataset.row_paths(found), shard)
    else:
        pairs = batch.sharded(found, shard, output, ".dac", batch.DAC_EXTS)
    if not pairs:
        raise DacliError("no input files found (or none in this --shard)")
    checked, outcomes = batch.checked(pairs)  # every input there, readable, not empty before a model loads
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    from .runtime.hardware import resolve_precision
    resolved = resolve_precision(precision, "cpu") if device == "cpu" else precision  # once, for every worker
    plain = registry.load_model(model, "cpu", "fp32")  # checks the name, and the bitrate, before Ray starts
    # mono files get the most codebooks: refused here if none fit, the notice here if the rate is capped
    plain.bitrate(kbps, n_codebooks, None if quiet else lambda m: batch.message(f"dacli: {m}")).codebooks(1)
    bitrate = plain.bitrate(kbps, n_codebooks)  # the workers': they print nothing
    bandwidth = codec.check_bandwidth(bandwidth, plain.sample_rate)
    if fmt == "parquet":
        dataset.made_otherwise(output, made, plain, bitrate)
    else:
        held = {}
    ray = _ray()
    todo = []
    for src, dst in checked:
        if fmt == "parquet" and dst.as_posix() in held:
            outcomes.append(Outcome.skipped(src, held[dst.as_posix()], f"{dst.as_posix()} (held by {held[dst.as_posix()]})"))
        elif fmt != "parquet" and batch.already_done(dst, overwrite):
            why = codec.made_otherwise(dst, plain, bitrate)
            outcomes.append(Outcome.failed(src, dst, DacliError(f"{dst} {why}: --overwrite to replace")) if why
                            else Outcome.skipped(src, dst, "exists"))
        else:
            todo.append({"src": str(src), "dst": str(dst)})
    for o in outcomes if not quiet else []:
        if o.status == FAILED:
            batch.message(f"dacli: error: {o.reason}")
    started = _connect(ray, address) if todo else False  # nothing to do: no cluster
    t0 = time.monotonic()
    try:
        if todo:
            if workers is None:
                workers = max(1, int(ray.cluster_resources().get("CPU", 1) // threads_per_worker))
            settings = {"model": model, "device": device, "precision": resolved, "n_codebooks": bitrate,
                        "window_seconds": window_seconds, "bandwidth": bandwidth, "overwrite": overwrite,
                        "threads": threads_per_worker, "format": fmt, "out": str(output),
                        "tag": dataset.run_tag(shard)}
            try:
                outcomes += _run(ray, todo, settings, workers, threads_per_worker, gpus_per_worker, quiet)
            except Exception as e:  # Ray gave up (a worker that cannot start, a cluster that went away)
                msg = first_line(e)
                raise DacliError(f"the Ray run stopped ({msg[:300]}); what was written is complete: run again "
                                 "to encode the rest") from None
    finally:
        if started:
            ray.shutdown()
            for item in todo if fmt != "parquet" else []:  # what workers stopped mid-file left behind
                batch.remove_stale_parts(Path(item["dst"]))
        if fmt == "parquet":
            dataset.remove_temporaries(output)
    return batch.write_report(outcomes, output, resolved, time.monotonic() - t0, quiet, beside=fmt == "parquet")


def _connect(ray, address: Optional[str]) -> bool:
    """Join the cluster at ``address``, or start a local instance on loopback → whether one was started."""
    if address and address != "auto":
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise DacliError(f"cannot reach the Ray cluster at {address} ({str(reason).lower()})") from None
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     runtime_env={"env_vars": dict(RAY_ENV)})
            return False
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, _node_ip_address="127.0.0.1", runtime_env={"env_vars": dict(RAY_ENV)})
        return True
    except Exception as e:
        msg = first_line(e)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise DacliError(f"cannot start or reach {where} ({msg[:200]})") from None


def _run(ray, todo: List[Dict], settings: Dict, workers: int, threads: int, gpus: float,
         quiet: bool) -> List[Outcome]:
    """The files of ``todo`` through an actor pool of ``workers`` → one outcome per file, as they finish."""
    from ray.data import ActorPoolStrategy
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # at most FILES_PER_TASK files per call, and at least two calls per worker while there are files for them;
    # the largest files first, so that the last calls, whose workers finish alone, are the shortest
    todo = sorted(todo, key=lambda item: -_size(item["src"]))
    blocks = max(min(len(todo), 2 * workers), math.ceil(len(todo) / FILES_PER_TASK))
    ds = ray.data.from_items(todo, override_num_blocks=blocks)
    # workers share their node with other workers and with Ray's own processes: threads that wait sleep soon
    env = {"GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": str(threads), **RAY_ENV}
    results = ds.map_batches(_worker_for(settings), batch_size=math.ceil(len(todo) / blocks),
                             compute=ActorPoolStrategy(size=workers), num_cpus=threads, num_gpus=gpus or None,
                             max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, runtime_env={"env_vars": env})
    outcomes = []
    with _own_stderr():
        bar = batch.progress(total=len(todo), unit="file", desc="encode", disable=quiet)
        try:
            audio = 0.0
            for row in results.iter_rows():
                outcomes.append(Outcome.from_row(row))
                audio += outcomes[-1].seconds
                bar.set_description(f"encode ({audio / 3600:.2f} h of audio)")
                bar.update(1)
                if outcomes[-1].status == FAILED and not quiet:
                    batch.message(f"dacli: error: {outcomes[-1].reason}")
        finally:
            bar.close()
    return outcomes


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@contextlib.contextmanager
def _own_stderr():
    """While the pool runs, dacli's messages go to stderr and the notices that Ray's C++ core writes to
    the process's file descriptor 2 (one per worker it starts) go nowhere."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    own, sys.stderr = sys.stderr, os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = own
        os.dup2(saved, 2)
        os.close(saved)
