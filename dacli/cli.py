"""The ``dacli`` command line: parses, reports and loops over files; the work is done elsewhere."""

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from . import codec, container, legacy, registry
from . import __version__
from .errors import DacliError, Terminated
from .runtime import process
from .runtime.hardware import PRECISIONS
from .fileio import AUDIO_EXTS, find_inputs, os_reason, remove_stale_parts
from .fileio import shard as take_shard

AUDIO_IN = AUDIO_EXTS - {".raw"}
DAC_EXTS = {".dac"}


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


def _write(msg):
    """A message line that does not break a progress bar on the terminal."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


class Reporter:
    """Progress on stderr (a bar over files, one over audio seconds per long file; plain lines now and
    then when stderr is not a terminal) and one-line messages."""

    def __init__(self, quiet, total):
        self.quiet = quiet
        self.files = progress(total=total, unit="file", disable=quiet or total < 2, position=0)

    def seconds(self, name, total):
        bar = progress(total=round(total, 1), unit="s", desc=str(name)[-40:], leave=False,
                       disable=self.quiet or total < 20, position=1,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
        return bar, (lambda s: bar.update(s))

    def error(self, msg):
        _write(f"dacli: error: {msg}")

    def info(self, msg):
        if not self.quiet:
            _write(msg)


def _destinations(items, output, suffix, single_exts):
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
    counts = {}
    for d in plain:
        counts[str(d).lower()] = counts.get(str(d).lower(), 0) + 1  # case-insensitive file systems too
    return [(src, Path(output) / rel.with_name(rel.name + suffix) if counts[str(d).lower()] > 1 else d)
            for (src, rel), d in zip(items, plain)]


PRECISION_CHOICES = ["auto", *PRECISIONS]
STDIO = Path("-")
PIPE_BUFFER = 1 << 20  # bytes per read when copying stdin or stdout: few system calls, little memory


@contextlib.contextmanager
def _pipes(inputs, output, in_name, out_name, stream_out=False):
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
            with open(output, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer, PIPE_BUFFER)
            sys.stdout.buffer.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sharded(items, shard, output, suffix, single_exts):
    """The (input, output) pairs of this --shard. Outputs are named over all inputs first, so that every
    job of a job array gives a file the same output name."""
    pairs = _destinations(items, output, suffix, single_exts)
    return [pair for pair, _ in take_shard(list(zip(pairs, items)), shard, key=lambda x: x[1][1])]


def _batch(pairs, overwrite, quiet, work, verb):
    """Run ``work(src, dst, reporter)`` on each pair; one bad file does not stop the rest."""
    if not pairs:
        raise DacliError("no input files found (or none in this --shard)")
    rep = Reporter(quiet, len(pairs))
    ok = skipped = failed = 0
    try:
        for src, dst in pairs:
            rep.files.set_description(str(src.name)[-30:])
            if dst != STDIO and dst.exists() and not overwrite:
                remove_stale_parts(dst)  # written outputs get this from atomic_output
                skipped += 1
                rep.info(f"skip {dst} (exists; --overwrite to replace)")
            else:
                try:
                    work(src, dst, rep)
                    ok += 1
                except DacliError as e:
                    failed += 1
                    rep.error(str(e))
                except BrokenPipeError:  # the reader of stdout went away: not this file's failure
                    raise
                except OSError as e:  # the environment: full disk, permissions, a folder in the way
                    failed += 1
                    rep.error(f"{e.filename or src}: {os_reason(e)}")
                except Exception as e:  # a bug or a resource problem: report it, go on with the batch
                    failed += 1
                    rep.error(f"{src}: unexpected {type(e).__name__}: {e}")
            rep.files.update(1)
    finally:
        rep.files.close()
    if len(pairs) > 1 or failed:
        rep.info(f"{verb} {ok} file(s), skipped {skipped}, failed {failed}")
    if failed:
        raise SystemExit(1)


def _positive(name, integer=False):
    """A click callback: the value, if given, must be a finite number above zero."""
    def check(ctx, param, value):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be a {'whole ' if integer else ''}number above zero, not {value}")
        return value
    return check


def _model_option(f):
    f = click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISION_CHOICES),
                     help="bf16 runs the model in bfloat16: fastest where the CPU/GPU computes it natively, "
                          "but with a noise floor in quiet passages. mixed: bfloat16 except the decoder's last "
                          "blocks and narrow (<= 32-channel) first encoder layers, as good as fp32 on our "
                          "measurements (codes may differ slightly). auto: "
                          "mixed where the CPU/GPU computes bfloat16 natively, fp32 elsewhere.")(f)
    f = click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Where to run the model ('auto' picks CUDA when present).")(f)
    return click.option("--model", "model_name", metavar="NAME|PATH", default=None,
                        help=f"Model: a checkpoint file, '{registry.DEFAULT_MODEL}' (bundled, the default) or an "
                             f"official name ({', '.join(registry.OFFICIAL)}) downloaded with 'dacli download'.")(f)


def _common_batch(f):
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")(f)
    f = click.option("--shard", metavar="K/N", help="Process only the K-th of N deterministic shares of the "
                                                    "files (for job arrays).")(f)
    f = click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them).")(f)
    return click.option("--chunk-seconds", type=float, default=None, callback=_positive("--chunk-seconds"),
                        help=f"Window length for inference (default {codec.ENCODE_CHUNK_SECONDS:g} s to encode, "
                             f"{codec.DECODE_CHUNK_SECONDS:g} s to decode); memory depends on it, results only through "
                             "float rounding (at most 0.1 % of codes, one 16-bit step of audio).")(f)


class Failure(click.ClickException):
    """A user-facing error: one line on stderr, exit code 1 (130 for an interrupt)."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None):
        click.echo(f"dacli: error: {self.message}", err=True)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DacliError as e:
            raise Failure(str(e)) from None
        except KeyboardInterrupt as e:
            raise Failure(Terminated.describe(e), Terminated.exit_code_of(e)) from None
        except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, like other tools
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(128 + 13) from None  # as if killed by SIGPIPE


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="dacli")
def cli():
    """Neural audio compression with the Descript Audio Codec (DAC).

    \b
    dacli encode song.wav -o song.dac --kbps 6     audio -> .dac
    dacli decode song.dac -o song.wav              .dac -> audio
    dacli encode music/ -o codes/                  a whole folder, tree mirrored
    """
    process.inference_settings()  # before any command imports torch


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output .dac file (one input), '-' for stdout, or folder (default: beside the input).")
@click.option("--kbps", type=float, callback=_positive("--kbps"),
              help="Target bitrate: the most codebooks whose exact bitrate fits.")
@click.option("--n-codebooks", type=int, callback=_positive("--n-codebooks", True),
              help="Number of codebooks to keep (default: all).")
@click.option("--bandwidth", default="auto", show_default=True, metavar="auto|full|HZ",
              help="Where the input's spectrum ends, recorded so that decoding low-passes there: auto "
                   "measures it (band-limited sources such as MP3s otherwise come back with hiss above "
                   "their cut-off), full records none, a number of Hz sets it.")
@_model_option
@_common_batch
def encode(inputs, output, kbps, n_codebooks, bandwidth, model_name, device, precision, chunk_seconds, overwrite,
           shard, quiet):
    """Encode audio files or folders (any rate, channels, length) into .dac files.

    '-' reads audio from stdin or writes the .dac to stdout:

    \b
    ffmpeg -i x.mp3 -f wav - | dacli encode - -o x.dac
    dacli encode a.wav -o - | ssh host 'cat > a.dac'
    """
    if kbps is not None and n_codebooks is not None:
        raise click.UsageError("give --kbps or --n-codebooks, not both")
    with _pipes(inputs, output, "stdin", "stdout.dac") as (inputs, output):
        _encode(inputs, output, kbps, n_codebooks, bandwidth, model_name, device, precision, chunk_seconds,
                overwrite, shard, quiet)


def _encode(inputs, output, kbps, n_codebooks, bandwidth, model_name, device, precision, chunk_seconds, overwrite,
            shard, quiet):
    pairs = _sharded(find_inputs(inputs, AUDIO_IN), shard, output, ".dac", DAC_EXTS)
    model = registry.load_model(model_name, device, precision)
    n = model.n_codebooks_for_kbps(kbps) if kbps is not None else model.check_n_codebooks(n_codebooks)
    bandwidth = codec.check_bandwidth(bandwidth, model.sample_rate)
    if not quiet:
        click.echo(f"model {model.name} ({model.precision}): {n} of {model.n_codebooks} codebooks = "
                   f"{model.kbps(n):.3f} kbps per channel", err=True)

    def work(src, dst, rep):
        rate, frames = _duration(src)
        bar, tick = rep.seconds(src.name, frames / rate if rate else 0)
        try:
            codec.encode_file(model, src, dst, n, chunk_seconds, progress=tick, bandwidth=bandwidth)
        finally:
            bar.close()

    _batch(pairs, overwrite, quiet, work, "encoded")


def _duration(path):
    try:
        import soundfile as sf
        i = sf.info(str(path))
        return i.samplerate, i.frames
    except Exception:
        return 0, 0


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output audio file (one input), '-' for stdout, or folder (default: beside the input).")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac"]), default=None,
              help="Output format (default: from the output name, else wav; with -o -, what is written to "
                   "stdout). 16-bit PCM.")
@_model_option
@_common_batch
def decode(inputs, output, fmt, model_name, device, precision, chunk_seconds, overwrite, shard, quiet):
    """Decode .dac files or folders back to audio at the original rate, channels and length.

    The model recorded in each file is used (its weights are checked); --model overrides it, and is
    needed for files written by the official tool. '-' reads the .dac from stdin or writes the audio
    to stdout: WAV is streamed as it is decoded (playback starts after the first second; on an error
    the stream stops short and the exit status says so), FLAC (--format flac) once complete:

    \b
    dacli decode x.dac -o - | ffplay -
    """
    named = output.suffix.lower()[1:] if output is not None and output.suffix.lower() in (".wav", ".flac") else None
    if fmt is not None and named is not None and fmt != named:
        raise click.UsageError(f"--format {fmt} contradicts the output name {output}")
    fmt = fmt or named or "wav"
    with _pipes(inputs, output, "stdin.dac", "stdout." + fmt, stream_out=fmt == "wav") as (inputs, output):
        _decode(inputs, output, fmt, model_name, device, precision, chunk_seconds, overwrite, shard, quiet)


def _decode(inputs, output, fmt, model_name, device, precision, chunk_seconds, overwrite, shard, quiet):
    if output == STDIO:  # streamed; _pipes has checked that there is one input file
        pairs = [(src, STDIO) for src, _ in find_inputs(inputs, DAC_EXTS)]
    else:
        pairs = _sharded(find_inputs(inputs, DAC_EXTS), shard, output, "." + fmt, {".wav", ".flac"})
    models = {}

    def get_model(name):
        if name not in models:
            models[name] = registry.load_model(name, device, precision)
        return models[name]

    def work(src, dst, rep):
        if dst == STDIO:
            dst = sys.stdout.buffer
        if legacy.is_legacy(src):
            if model_name is None:
                raise DacliError(f"{src}: a file of the official tool records no model; pass --model")
            legacy.decode_file(get_model(model_name), src, dst, fmt)
            return
        header = container.read_header(src)
        name = model_name or header.model_name
        if model_name is None and registry.is_bundled_name(name):
            name = registry.DEFAULT_MODEL  # check_model names the version a file needs if not this one
        if model_name is None and name not in registry.BUNDLED and name not in registry.OFFICIAL:
            raise DacliError(f"{src}: encoded with model {name!r}, which is not a known name; pass --model PATH")
        bar, tick = rep.seconds(src.name, header.duration)
        try:
            codec.decode_file(get_model(name), src, dst, fmt, chunk_seconds, progress=tick)
        finally:
            bar.close()

    _batch(pairs, overwrite, quiet, work, "decoded")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output .dac file (one input) or folder.")
@click.option("--kbps", type=float, callback=_positive("--kbps"), help="Target bitrate (drops the last codebooks).")
@click.option("--n-codebooks", type=int, callback=_positive("--n-codebooks", True), help="Number of codebooks to keep.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")
def transcode(inputs, output, kbps, n_codebooks, overwrite, quiet):
    """Rewrite .dac files at a lower bitrate from their codes alone (no model, no re-encoding)."""
    if (kbps is None) == (n_codebooks is None):
        raise click.UsageError("give exactly one of --kbps and --n-codebooks")

    def work(src, dst, rep):
        header, codes = container.read(src)
        n = n_codebooks if n_codebooks is not None else container.codebooks_for_kbps(
            kbps, header.kbps / header.n_codebooks, header.n_codebooks)
        container.write(dst, *container.truncate_codebooks(header, codes, n))

    with _pipes(inputs, output, "stdin.dac", "stdout.dac") as (inputs, output):
        _batch(_destinations(find_inputs(inputs, DAC_EXTS), output, ".dac", DAC_EXTS), overwrite, quiet, work,
               "transcoded")


def describe(path):
    """A dict describing a .dac file (ours or legacy)."""
    if legacy.is_legacy(path):  # opens the file: one-line errors for missing files, folders, FIFOs
        lg = legacy.read(path)
        size = os.path.getsize(path)
        dur = lg.original_length / lg.sample_rate
        return {"file": str(path), "format": "official descript-audio-codec 1.0.0 (legacy, pickled numpy)",
                "original_sample_rate": lg.sample_rate, "channels": lg.channels, "duration_s": round(dur, 3),
                "n_codebooks": int(lg.codes.shape[1]), "frames": int(lg.codes.shape[-1]),
                "chunk_length": lg.chunk_length, "input_loudness_lufs": round(lg.input_db, 2),
                "file_bytes": size, "file_kbps": round(size * 8 / dur / 1000, 3) if dur else None}
    h, _ = container.read(path)  # reads everything, so the CRCs are checked too
    size = os.path.getsize(path)
    pcm = h.original_length * h.channels * 2
    return {"file": str(path), "format": f"dacli .dac v{container.VERSION}", "model": h.model_name,
            "model_sha256": h.model_hash.hex(), "model_sample_rate": h.model_sample_rate,
            "frame_rate_hz": round(float(h.frame_rate), 4), "original_sample_rate": h.original_sample_rate,
            "channels": h.channels, "duration_s": round(h.duration, 3), "frames": h.n_frames,
            "n_codebooks": h.n_codebooks, "bits_per_code": h.bits_per_code,
            "kbps": round(h.kbps * h.channels, 3),
            "file_kbps": round(size * 8 / h.duration / 1000, 3) if h.duration else None,
            "file_bytes": size, "compression_ratio_vs_pcm16": round(pcm / size, 1),
            "input_loudness_lufs": round(h.input_loudness, 2), "gain_db": round(h.gain_db, 2),
            "bandwidth_hz": h.bandwidth_hz or "full"}


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(files, as_json):
    """Describe .dac files: model, rates, channels, duration, codebooks, bitrate, compression ratio."""
    failed = False
    rows = []
    for f in files:
        try:
            rows.append(describe(f))
        except DacliError as e:
            click.echo(f"dacli: error: {e}", err=True)
            failed = True
    if as_json:
        click.echo(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
    else:
        for r in rows:
            width = max(len(k) for k in r)
            click.echo("\n".join(f"{k:<{width}}  {v}" for k, v in r.items()) + "\n")
    if failed:
        raise SystemExit(1)


@cli.command()
def models():
    """List the bundled and official models: name, kind, version (the bundled model's version, an
    official release's tag) and where each is on disk."""
    for name, kind, path in registry.models():
        where = str(path) if path else ("not downloaded: dacli download " + name if kind == "official" else "missing")
        if kind == "bundled":  # its version name; an official model's release tag
            versions = registry.bundled_versions()
            version = versions[-1].version.rsplit("-", 1)[-1] if versions else "?"
        else:
            version = registry.OFFICIAL[name][0]
        click.echo(f"{name:<14} {kind:<9} {version:<7} {where}")
    click.echo(f"cache: {registry.cache_dir()}")


@cli.command()
@click.argument("name", type=click.Choice(sorted(registry.OFFICIAL)))
@click.option("--base-url", default=None, hidden=True, help="Release base URL (for testing mirrors).")
@click.option("--quiet", "-q", is_flag=True)
def download(name, base_url, quiet):
    """Download an official DAC release into the user cache."""
    bar = progress(unit="B", unit_scale=True, desc=name, disable=quiet)

    def tick(n, total):
        if total and bar.total != total:
            bar.total = total
        bar.update(n)

    try:
        path = registry.download(name, base=base_url, progress=tick)
    finally:
        bar.close()
    click.echo(str(path))


@cli.command("bench")
@click.option("--model", "model_name", default="44khz-8kbps", show_default=True, metavar="NAME|PATH",
              help="A preset (random weights unless downloaded), the bundled model, or a checkpoint.")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Audio length to time.")
@click.option("--channels", type=int, default=1, show_default=True)
@click.option("--input", "source", type=click.Path(exists=True, dir_okay=False),
              help="A recording to loop as test audio (default: synthetic).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISION_CHOICES))
@click.option("--chunk-seconds", type=float, default=None, callback=_positive("--chunk-seconds"),
              help=f"Window length (default {codec.ENCODE_CHUNK_SECONDS:g} s to encode, "
                   f"{codec.DECODE_CHUNK_SECONDS:g} s to decode).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(model_name, seconds, channels, source, device, precision, chunk_seconds, as_json):
    """Time file-to-file encode and decode: real-time factors, peak RSS, GFLOP/s."""
    from . import bench
    res = bench.bench(model_name, source, seconds, channels, device, precision, chunk_seconds)
    click.echo(json.dumps(res, indent=2) if as_json else bench.report(res))


@cli.command("eval")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--codec", "codecs", multiple=True, metavar="SPEC",
              help="Run this codec over SOURCE_DIR: dac:MODEL@KBPS (or dac@KBPS for the default model; "
                   "/bf16 or /mixed after the bitrate runs it in that precision, /full without the "
                   "bandwidth low-pass), opus@KBPS, mp3@KBPS (ffmpeg). Repeatable.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write per-file rows as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw rate-distortion curves (with --codec) to this PNG.")
@click.option("--no-visqol", is_flag=True, help="Skip ViSQOL (the slowest metric).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--quiet", "-q", is_flag=True)
def eval_cmd(paths, codecs, csv_path, as_json, plot_path, no_visqol, device, quiet):
    """Measure quality with the DAC paper's metrics (mel and STFT distance, SI-SDR, ViSQOL).

    \b
    dacli eval REF DEGRADED                      two files, or two folders with mirrored trees
    dacli eval --codec dac@7.75 --codec opus@8 --codec mp3@8 SOURCE_DIR --plot rd.png
    """
    from . import evaluate
    if codecs:
        if len(paths) != 1 or not paths[0].is_dir():
            raise click.UsageError("with --codec, give one SOURCE_DIR")
        bar = progress(total=None, unit="run", disable=quiet)
        rows, summary = evaluate.evaluate_codecs(codecs, paths[0], not no_visqol, device,
                                                 progress=lambda c, f: (bar.set_description(c), bar.update(1)))
        bar.close()
    else:
        if len(paths) != 2:
            raise click.UsageError("give REF and DEGRADED (files or folders), or --codec SPEC SOURCE_DIR")
        rows = []
        for ref, deg, rel in _pairs(*paths):
            m = evaluate.compare_files(ref, deg, not no_visqol)
            rows.append({"codec": "degraded", "family": "degraded", "file": str(rel), **m})
        summary = evaluate.summarize(rows)
    if csv_path:
        import csv
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if plot_path:
        evaluate.plot(summary, plot_path)
    if as_json:
        click.echo(json.dumps({"files": rows, "summary": summary}, indent=2))
    else:
        if not codecs:
            for r in rows:
                click.echo(f"{r['file']}: " + ", ".join(f"{k} {r[k]:.3f}" for k in evaluate.METRICS))
        click.echo(evaluate.table(summary))


def _pairs(ref, deg):
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


