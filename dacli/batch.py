"""Batch mechanics shared by the commands that convert files: where each output goes (folders
mirrored, collision-safe names, shards of a job array), ``-`` for stdin and stdout, the loop over
files (skip existing, one bad file does not stop the rest, a summary), and progress on stderr (bars on
a terminal, plain lines in a log)."""

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .errors import DacliError
from .fileio import AUDIO_IN, atomic_output, os_reason, remove_stale_parts, shard
from .outcome import FAILED, INPUT_ERRORS, OK, SKIPPED, Outcome

DAC_EXTS = {".dac"}
STDIO = Path("-")
REPORT_PREFIX = "dacli-report-"  # a run's report in its output folder
PIPE_BUFFER = 1 << 20  # bytes per read when copying stdin or stdout: few system calls, little memory

Pair = Tuple[Path, Path]          # (input, output)
Found = Tuple[Path, Path]         # (input, its path relative to the folder it was found in)


class PlainProgress:
    """What a progress bar reports, for a log rather than a terminal: a plain line once ``first``
    seconds have passed (a sign of life early in long work), then at most every ``every`` seconds,
    and one at the end; never cursor movements."""

    def __init__(self, total=None, desc="", unit="", disable=False, every=10.0, first=2.0, **_):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.every, self.then, self.n, self.last = first, every, 0, time.monotonic()

    def set_description(self, desc):
        self.desc = desc

    def update(self, n=1):
        self.n += n
        if not self.disable and time.monotonic() - self.last >= self.every:
            self._line()

    def _line(self):
        self.last, self.every = time.monotonic(), self.then
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

    def audio_bar(self, name, total: float):
        """A bar over the seconds of audio of one file (shown from 20 s on), and the function that
        advances it."""
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


def check_input(src: Path) -> None:
    """Refuse an input that is missing, unreadable or empty, in one line: what :func:`run` checks of
    every input before any model is loaded."""
    try:
        st = os.stat(src)
    except OSError as e:
        raise DacliError(f"{src}: {os_reason(e)}") from None
    if not os.access(src, os.R_OK):
        raise DacliError(f"{src}: permission denied")
    if st.st_size == 0:
        raise DacliError(f"{src}: empty file")


def checked(pairs: Sequence[Pair], check: Optional[Callable[[Path], None]] = check_input
            ) -> Tuple[List[Pair], List[Outcome]]:
    """The pairs whose input passes ``check`` (:func:`check_input`), and a failed outcome for each
    other: what a run does before it loads a model."""
    good: List[Pair] = []
    failed: List[Outcome] = []
    for src, dst in pairs:
        try:
            if check is not None:
                check(src)
            good.append((src, dst))
        except INPUT_ERRORS as e:
            failed.append(Outcome.failed(src, dst, e))
    return good, failed


def already_done(dst: Path, overwrite: bool) -> bool:
    """Whether ``dst`` exists and stays (no ``overwrite``): an output exists only once complete. The
    temporary files that killed writers left for it are removed (written outputs get this from
    atomic_output)."""
    if dst == STDIO or overwrite or not dst.exists():
        return False
    remove_stale_parts(dst)
    return True


Work = Callable[[Path, Path, "Reporter"], Optional[Iterable[Outcome]]]
Differs = Callable[[Path, Path], Optional[str]]


def run(pairs: Sequence[Pair], overwrite: bool, quiet: bool, work: Work, verb: str,
        finish: Optional[Callable[[], Iterable[Outcome]]] = None,
        report: Optional[Callable[[List[Outcome], float], None]] = None,
        present: Optional[Callable[[Path], Optional[str]]] = None,
        start: Optional[Callable[["Reporter"], None]] = None,
        check: Optional[Callable[[Path], None]] = check_input,
        differs: Optional[Differs] = None) -> int:
    """Run ``work(src, dst, reporter)`` on each pair not already done; one bad file does not stop the
    rest. First every input is checked (``check``: exists, readable, not empty), then ``start(reporter)``
    (loading a model) runs once if anything is left to do. An existing output is skipped unless
    ``overwrite`` when ``differs(src, dst)`` finds it made with the same settings; one made otherwise
    fails its pair with that reason and stays as it is. ``present(dst)``, when given, says instead where
    an output already is, or None. ``work`` returns None when its pair is done, or the outcomes of the
    files it completed (the others it completes in a later call or in ``finish()``); raising one of
    :data:`~dacli.outcome.INPUT_ERRORS` fails its pair, anything else (a bug, an interrupt, the reader
    of stdout gone) stops the run. Ends with a summary, and ``report(outcomes, seconds)`` with one
    outcome per pair; returns the number of failed files."""
    if not pairs:
        raise DacliError("no input files found (or none in this --shard)")
    rep = Reporter(quiet, len(pairs))
    outcomes: List[Outcome] = []
    started, audio, current = time.monotonic(), [0.0], [""]

    def describe() -> None:
        done = f" ({audio[0] / 3600:.2f} h of audio done)" if audio[0] else ""
        rep.files.set_description(current[0][-30:] + done)

    def record(done: Iterable[Outcome]) -> None:
        for o in done:
            outcomes.append(o)
            audio[0] += o.seconds
            if o.status == SKIPPED:
                rep.info(f"skip {o.reason}")
            elif o.status == FAILED:
                rep.error(o.reason)
            describe()  # the hours the file just finished brings, with its count
            rep.files.update(1)

    try:
        todo, failed = checked(pairs, check)
        record(failed)
        if todo and start is not None:
            start(rep)
        for src, dst in todo:
            current[0] = str(src.name)
            describe()
            where = present(dst) if present else None
            if present is None and already_done(dst, overwrite):
                why = differs(src, dst) if differs else None
                if why:
                    record([Outcome.failed(src, dst, DacliError(f"{dst} {why}: --overwrite to replace"))])
                    continue
                where = f"{dst} (exists; --overwrite to replace)"
            if where:
                record([Outcome.skipped(src, dst, where)])
                continue
            try:
                done = work(src, dst, rep)
            except BrokenPipeError:
                raise
            except INPUT_ERRORS as e:
                done = [Outcome.failed(src, dst, e)]
            record([Outcome.done(src, dst)] if done is None else done)
        if finish is not None and todo:
            record(finish())
    finally:
        rep.files.close()
    counts = {s: sum(o.status == s for o in outcomes) for s in (OK, SKIPPED, FAILED)}
    if report is not None:
        report(outcomes, time.monotonic() - started)
    elif len(pairs) > 1 or counts[FAILED]:
        rep.info(f"{verb} {counts[OK]} file(s), skipped {counts[SKIPPED]}, failed {counts[FAILED]}")
    return counts[FAILED]


def report_path(output: Path, beside: bool = False) -> Path:
    """Where a run into the folder ``output`` writes its report: ``dacli-report-DATE-PID.tsv`` inside
    it, or, for a token dataset (``beside``: a folder that Parquet readers take whole, where any other
    file breaks them), ``NAME.dacli-report-DATE-PID.tsv`` beside it (in the user cache's ``reports/``
    when that folder cannot be written)."""
    stamp = f"{REPORT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.tsv"
    if not beside:
        output.mkdir(parents=True, exist_ok=True)
        return output / stamp
    if os.access(output.resolve().parent, os.W_OK):
        return next_to(output, stamp)
    from .registry import cache_dir
    (cache_dir() / "reports").mkdir(parents=True, exist_ok=True)
    return cache_dir() / "reports" / f"{output.resolve().name}.{stamp}"


def next_to(folder: Path, name: str) -> Path:
    """Where a file about ``folder`` that must not be inside it goes: ``FOLDER.NAME`` next to it."""
    full = Path(folder).resolve()
    return full.parent / f"{full.name}.{name}"


def write_report(outcomes: Sequence[Outcome], output: Path, precision: str, seconds: float,
                 quiet: bool, beside: bool = False) -> Dict[str, int]:
    """Write a run's report (:func:`report_path`: one row per input with its status, the one-line
    reason, seconds of audio and the worker) and print the summary (files, hours of audio, hours per
    hour, where the report is) → counts per status."""
    counts = {s: sum(o.status == s for o in outcomes) for s in (OK, SKIPPED, FAILED)}
    audio = sum(o.seconds for o in outcomes if o.status == OK)
    name = report_path(output, beside)
    with atomic_output(name) as tmp, open(tmp, "w") as f:
        f.write(f"# precision {precision}\ninput\toutput\tstatus\treason\tseconds\tworker\n")
        for o in sorted(outcomes, key=lambda o: o.src):
            reason = o.reason.replace("\t", " ").replace("\n", " ")
            f.write(f"{o.src}\t{o.dst}\t{o.status}\t{reason}\t{o.seconds:.3f}\t{o.worker}\n")
    if not quiet or counts[FAILED]:
        rate = audio / seconds if seconds > 0 else 0.0
        message(f"encoded {counts[OK]} file(s), skipped {counts[SKIPPED]}, failed {counts[FAILED]}; "
                f"{audio / 3600:.3f} h of audio in {seconds / 3600:.3f} h ({rate:.1f} hours per hour), "
                f"precision {precision}; report {name}")
    return counts
