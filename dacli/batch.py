"""Batch mechanics shared by the commands that convert files: where each output goes (folders
mirrored, collision-safe names, shards of a job array), ``-`` for stdin and stdout, the loop over
files (skip existing, one bad file does not stop the rest, a summary), and progress on stderr (bars on
a terminal, plain lines in a log)."""

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .errors import DacliError
from .fileio import AUDIO_IN, atomic_output, os_reason, remove_stale_parts, shard

DAC_EXTS = {".dac"}
STDIO = Path("-")
REPORT_PREFIX = "dacli-report-"  # a run's report in its output folder
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this process, as a report names it
PIPE_BUFFER = 1 << 20  # bytes per read when copying stdin or stdout: few system calls, little memory

Pair = Tuple[Path, Path]          # (input, output)
Found = Tuple[Path, Path]         # (input, its path relative to the folder it was found in)


class PlainProgress:
    """What a progress bar reports, for a log rather than a terminal: a plain line at most every
    ``every`` seconds and one at the end, never cursor movements."""

    def __init__(self, total=None, desc="", unit="", disable=False, every=10.0, **_):
        self.total, self.desc, self.unit, self.disable, self.every = total, desc, unit, disable, every
        self.n, self.last = 0, time.monotonic()

    def set_description(self, desc):
        self.desc = desc

    def update(self, n=1):
        self.n += n
        if not self.disable and time.monotonic() - self.last >= self.every:
            self._line()

    def _line(self):
        self.last = time.monotonic()
        of = f"/{self.total:.0f}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"dacli: {self.desc}: {self.n:.0f}{of} {self.unit}{pct}", file=sys.stderr, flush=True)

    def close(self):
        if not self.disable and self.n and time.monotonic() - self.last >= 1.0:
            self._line()


def progress(**kw):
    """A tqdm bar on a terminal; :class:`PlainProgress` lines when stderr goes to a file or pipe."""
    if not sys.stderr.isatty():
        return PlainProgress(**kw)
    from tqdm import tqdm
    return tqdm(file=sys.stderr, dynamic_ncols=True, **kw)


def message(msg: str) -> None:
    """A message line that does not break a progress bar on the terminal."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


class Reporter:
    """Progress on stderr (a bar over files, one over audio seconds per long file; plain lines now and
    then when stderr is not a terminal) and one-line messages."""

    def __init__(self, quiet: bool, total: int):
        self.quiet = quiet
        self.files = progress(total=total, unit="file", disable=quiet or total < 2, position=0)

    def seconds(self, name, total: float):
        """A bar over the seconds of audio of one file, and the function that advances it."""
        bar = progress(total=round(total, 1), unit="s", desc=str(name)[-40:], leave=False,
                       disable=self.quiet or total < 20, position=1,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
        return bar, (lambda s: bar.update(s))

    def error(self, msg: str) -> None:
        message(f"dacli: error: {msg}")

    def info(self, msg: str) -> None:
        if not self.quiet:
            message(msg)


def destinations(items: Sequence[Found], output: Optional[Path], suffix: str, single_exts: Set[str]) -> List[Pair]:
    """Map inputs to outputs. One input file with an output name ending in one of ``single_exts`` (or
    no output: beside the input) writes there; otherwise ``output`` is a folder that mirrors the inputs.
    Inputs whose outputs would share a name (``song.wav`` and ``song.flac``) keep their own extension
    in it (``song.wav.dac``, ``song.flac.dac``), so no output overwrites another."""
    other = (AUDIO_IN | DAC_EXTS) - single_exts
    if output is not None and Path(output).suffix.lower() in other and not Path(output).is_dir():
        raise DacliError(f"-o {output}: this command writes {'/'.join(sorted(single_exts))} files; "
                         f"give an output name with that extension, or a folder")
    if len(items) == 1 and items[0][1] == Path(items[0][0].name):
        src = items[0][0]
        if output is None:
            return [(src, src.with_suffix(suffix))]
        if Path(output).suffix.lower() in single_exts and not Path(output).is_dir():
            return [(src, Path(output))]
    if output is None:
        raise DacliError("-o/--output FOLDER is needed when the input is a folder or several files")
    if Path(output).suffix.lower() in single_exts and not Path(output).is_dir():
        raise DacliError(f"-o {output}: with several inputs the output is a folder; give a folder name")
    plain = [Path(output) / rel.with_suffix(suffix) for _, rel in items]
    counts: dict = {}
    for d in plain:
        counts[str(d).lower()] = counts.get(str(d).lower(), 0) + 1  # case-insensitive file systems too
    return [(src, Path(output) / rel.with_name(rel.name + suffix) if counts[str(d).lower()] > 1 else d)
            for (src, rel), d in zip(items, plain)]


def sharded(items: Sequence[Found], spec: Optional[str], output: Optional[Path], suffix: str,
            single_exts: Set[str]) -> List[Pair]:
    """The (input, output) pairs of the shard ``spec`` ("K/N"; None: all). Outputs are named over all
    inputs first, so that every job of a job array gives a file the same output name."""
    pairs = destinations(items, output, suffix, single_exts)
    return [pair for pair, _ in shard(list(zip(pairs, items)), spec, key=lambda x: x[1][1])]


@contextlib.contextmanager
def pipes(inputs: Sequence[Path], output: Optional[Path], in_name: str, out_name: str,
          stream_out: bool = False) -> Iterator[Tuple[Sequence[Path], Optional[Path]]]:
    """``-`` as the input or the output. stdin is first copied to a temporary file (the encoder reads
    its input twice; memory stays bounded however long the stream); an output for stdout is written to
    a temporary file and copied out once complete, unless ``stream_out`` (the command writes to stdout
    itself as it goes: the output stays ``-``). The temporary folder is removed on every exit path.
    Yields (inputs, output) to use instead."""
    use_in, use_out = STDIO in inputs, output == STDIO
    if not (use_in or use_out):
        yield inputs, output
        return
    if use_in and len(inputs) > 1:
        raise DacliError("'-' (stdin) must be the only input")
    if use_in and output is None:
        raise DacliError("reading stdin needs -o FILE (or -o - for stdout)")
    if use_out and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise DacliError("-o - writes one file to stdout: give one input file")
    tmp = Path(tempfile.mkdtemp(prefix="dacli-pipe-"))
    try:
        if use_in:
            if sys.stdin.isatty():
                raise DacliError("stdin is a terminal: pipe data into dacli, or name an input file")
            src = tmp / in_name
            with open(src, "wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f, PIPE_BUFFER)
            if src.stat().st_size == 0:
                raise DacliError("no data on stdin")
            inputs = (src,)
        if use_out:
            if sys.stdout.isatty():
                raise DacliError("stdout is a terminal: redirect it to a file or a pipe, or give -o FILE")
            if not stream_out:
                output = tmp / out_name
        yield inputs, output
        if use_out and not stream_out:
            with open(output, "rb") as f:  # type: ignore[arg-type]
                shutil.copyfileobj(f, sys.stdout.buffer, PIPE_BUFFER)
            sys.stdout.buffer.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OK, SKIPPED, FAILED = "ok", "skipped", "failed"


def already_done(dst: Path, overwrite: bool) -> bool:
    """Whether ``dst`` exists and stays (no ``overwrite``): an output exists only once complete. The
    temporary files that killed writers left for it are removed (written outputs get this from
    atomic_output)."""
    if dst == STDIO or overwrite or not dst.exists():
        return False
    remove_stale_parts(dst)
    return True


def failure(src: Path, e: Exception) -> str:
    """The one-line reason a file failed: user-facing errors as they are, environment errors (full
    disk, permissions) with the file they concern, anything else as unexpected."""
    if isinstance(e, DacliError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.filename or src}: {os_reason(e)}"
    return f"{src}: unexpected {type(e).__name__}: {e}"


Done = Tuple[int, Optional[Exception], float]  # (index of a pair, its error or None, seconds of audio)
Row = Dict[str, Any]  # a line of the report: src, dst, status, reason, seconds, worker


def run(pairs: Sequence[Pair], overwrite: bool, quiet: bool, work: Callable[..., Optional[Iterable[Done]]],
        verb: str, finish: Optional[Callable[[], Iterable[Done]]] = None, report: Optional[Callable] = None) -> int:
    """Run ``work(i, src, dst, reporter)`` on each pair not already done (skipped unless ``overwrite``);
    one bad file does not stop the rest. ``work`` returns None when pair ``i`` is done, or the
    :data:`Done` of the pairs it completed (the others it completes in a later call or in
    ``finish()``); raising fails pair ``i``. ``BrokenPipeError`` (the reader of stdout went away) and
    interrupts propagate. Ends with a summary, and ``report(rows)`` with one row per pair; returns the
    number of failed files."""
    if not pairs:
        raise DacliError("no input files found (or none in this --shard)")
    rep = Reporter(quiet, len(pairs))
    rows: List[Row] = []
    started, audio = time.monotonic(), [0.0]

    def record(i, status, reason="", seconds=0.0):
        src, dst = pairs[i]
        audio[0] += seconds
        rows.append({"src": str(src), "dst": str(dst), "status": status, "reason": reason, "seconds": seconds,
                     "worker": WORKER})
        if status == SKIPPED:
            rep.info(f"skip {reason}")
        elif status == FAILED:
            rep.error(reason)
        rep.files.update(1)

    def completed(done):
        for j, err, seconds in done:
            record(j, *((OK, "", seconds) if err is None else (FAILED, failure(pairs[j][0], err))))

    try:
        for i, (src, dst) in enumerate(pairs):
            rep.files.set_description(str(src.name)[-30:] + (f" ({audio[0] / 3600:.2f} h of audio done)" if audio[0] else ""))
            if already_done(dst, overwrite):
                record(i, SKIPPED, f"{dst} (exists; --overwrite to replace)")
                continue
            try:
                done = work(i, src, dst, rep)
            except BrokenPipeError:
                raise
            except Exception as e:
                done = [(i, e, 0.0)]
            completed([(i, None, 0.0)] if done is None else done)
        if finish is not None:
            completed(finish())
    finally:
        rep.files.close()
    counts = {s: sum(r["status"] == s for r in rows) for s in (OK, SKIPPED, FAILED)}
    if report is not None:
        report(rows, time.monotonic() - started)
    elif len(pairs) > 1 or counts[FAILED]:
        rep.info(f"{verb} {counts[OK]} file(s), skipped {counts[SKIPPED]}, failed {counts[FAILED]}")
    return counts[FAILED]


def write_report(rows: Sequence[Row], output: Path, precision: str, seconds: float, quiet: bool) -> Dict[str, int]:
    """Write a run's report into the folder ``output`` (``dacli-report-DATE-PID.tsv``: one row per
    input with its status, the one-line reason, seconds of audio and the worker) and print the summary
    (files, hours of audio, hours per hour) → counts per status."""
    counts = {s: sum(r["status"] == s for r in rows) for s in (OK, SKIPPED, FAILED)}
    audio = sum(float(r["seconds"]) for r in rows if r["status"] == OK)
    output.mkdir(parents=True, exist_ok=True)
    name = output / f"{REPORT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.tsv"
    with atomic_output(name) as tmp, open(tmp, "w") as f:
        f.write(f"# precision {precision}\ninput\toutput\tstatus\treason\tseconds\tworker\n")
        for r in sorted(rows, key=lambda r: str(r["src"])):
            reason = str(r["reason"]).replace("\t", " ").replace("\n", " ")
            f.write(f"{r['src']}\t{r['dst']}\t{r['status']}\t{reason}\t{float(r['seconds']):.3f}\t"
                    f"{r['worker']}\n")
    if not quiet or counts[FAILED]:
        rate = audio / seconds if seconds > 0 else 0.0
        message(f"encoded {counts[OK]} file(s), skipped {counts[SKIPPED]}, failed {counts[FAILED]}; "
                f"{audio / 3600:.3f} h of audio in {seconds / 3600:.3f} h ({rate:.1f} hours per hour), "
                f"precision {precision}; report {name}")
    return counts
