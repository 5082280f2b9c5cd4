"""The ``dacli`` command line: parses options, reports, and loops over files with :mod:`dacli.batch`;
the work is done by :mod:`dacli.codec`, :mod:`dacli.container` and :mod:`dacli.registry`."""

import os
import sys
from pathlib import Path

import click

from . import __version__, batch, cli_measure, codec, container, registry
from .batch import AUDIO_IN, DAC_EXTS, STDIO
from .cli_options import BATCH, KBPS, MODEL_RUN, N_CODEBOOKS, OVERWRITE, QUIET, positive, strict_json
from .errors import DacliError, Terminated
from .fileio import find_inputs
from .fileio import shard as shard_of
from .runtime import process


def _exit_on_failures(failed: int) -> None:
    """A batch with failed files ends with exit status 1 (each failure has been reported)."""
    if failed:
        raise SystemExit(1)


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
    process.tune_process()  # before any command imports torch


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output .dac file (one input), '-' for stdout, or folder (default: beside the input).")
@KBPS
@N_CODEBOOKS
@click.option("--bandwidth", default="auto", show_default=True, metavar="auto|full|HZ",
              help="Where the input's spectrum ends, recorded so that decoding low-passes there: auto "
                   "measures it (band-limited sources such as MP3s otherwise come back with hiss above "
                   "their cut-off), full records none, a number of Hz sets it.")
@MODEL_RUN
@BATCH
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: a Ray cluster's workers (pip install 'dacli[ray]'). Either lays "
                   "the windows of many files side by side in model calls of one shape; encoding into a folder "
                   "writes a report of the run (dacli-report-*.tsv) there.")
@click.option("--address", metavar="ADDR", help="With --engine ray: the cluster to join (default: start a local "
                                                "instance on this machine, stopped at the end).")
@click.option("--workers", type=int, default=None, help="With --engine ray: worker processes (default: the "
                                                        "cluster's CPUs / --threads-per-worker).")
@click.option("--threads-per-worker", type=int, default=1, show_default=True, help="With --engine ray: CPU "
                                                                                    "threads of each worker.")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="With --engine ray: the share of a GPU each worker takes (workers run on CUDA when above 0).")
@click.option("--raw-codes", is_flag=True,
              help="Write a raw token stream (docs/FORMAT.md, Raw codes) as codes become final, from WAV or raw "
                   "16-bit PCM (--channels) at the model rate: live audio, no loudness normalisation.")
@click.option("--channels", type=int, default=None, callback=positive("--channels", True),
              help="With --raw-codes: channels of raw PCM input.")
@click.option("--gain-db", type=float, default=0.0, show_default=True, help="With --raw-codes: the fixed gain.")
@click.option("--format", "fmt", type=click.Choice(["dac", "parquet"]), default="dac", show_default=True,
              help="dac: a .dac file per input. parquet: a token dataset in the folder -o, Parquet shards of one "
                   "row per input (docs/FORMAT.md, Token datasets); a run adds the inputs that no shard holds.")
@click.option("--rows-per-shard", type=int, default=None, callback=positive("--rows-per-shard", True),
              help="With --format parquet and the local engine: inputs per shard (default 1000, or 256 MB of "
                   "codes). The Ray engine writes a shard per task.")
def encode(inputs, output, kbps, n_codebooks, bandwidth, model_name, device, precision, window_seconds, overwrite,
           shard, quiet, engine, address, workers, threads_per_worker, gpus_per_worker, raw_codes, channels, gain_db,
           fmt, rows_per_shard):
    """Encode audio files or folders (any rate, channels, length) into .dac files or a token dataset.

    '-' reads audio from stdin or writes the .dac to stdout:

    \b
    ffmpeg -i x.mp3 -f wav - | dacli encode - -o x.dac
    dacli encode a.wav -o - | ssh host 'cat > a.dac'
    dacli encode corpus/ -o tokens/ --format parquet
    """
    if kbps is not None and n_codebooks is not None:
        raise click.UsageError("give --kbps or --n-codebooks, not both")
    if fmt == "parquet":
        if raw_codes or STDIO in inputs or output in (None, STDIO) or output.suffix.lower() == ".dac":
            raise click.UsageError("--format parquet reads files and folders and writes shards into a folder: "
                                   "give -o FOLDER")
        if overwrite:
            raise click.UsageError("--overwrite does not apply to --format parquet: a run adds the inputs that no "
                                   "shard holds; remove a shard to encode its inputs again")
    elif rows_per_shard is not None:
        raise click.UsageError("--rows-per-shard goes with --format parquet")
    if raw_codes:
        from . import pipe
        model = registry.load_model(model_name, device, precision)
        return pipe.encode_files(inputs, output, model, kbps, n_codebooks, channels, gain_db)
    if channels is not None or gain_db:
        raise click.UsageError("--channels and --gain-db go with --raw-codes")
    if engine == "local" and (address or workers is not None or threads_per_worker != 1 or gpus_per_worker):
        raise click.UsageError("--address, --workers, --threads-per-worker and --gpus-per-worker go with --engine ray")
    if engine == "ray":
        if STDIO in inputs or output is None or output == STDIO or output.suffix.lower() == ".dac":
            raise click.UsageError("--engine ray reads files and folders and writes into a folder: give -o FOLDER")
        from . import ray_engine
        counts = ray_engine.encode_corpus(inputs, output, model=model_name, kbps=kbps, n_codebooks=n_codebooks,
                                          bandwidth=bandwidth, precision=precision, window_seconds=window_seconds,
                                          overwrite=overwrite, shard=shard, address=address, workers=workers,
                                          threads_per_worker=threads_per_worker, gpus_per_worker=gpus_per_worker,
                                          quiet=quiet, fmt=fmt)
        _exit_on_failures(counts["failed"])
        return
    with batch.pipes(inputs, output, "stdin", "stdout.dac") as (inputs, output):
        found = find_inputs(inputs, AUDIO_IN)
        run: dict = {}  # what start() makes once the inputs are checked: the model, its bitrate, the tokenizer
        if fmt == "parquet":  # rows named by their paths in the corpus; what a complete shard holds is done
            from . import dataset
            run["held"], made = dataset.prepare(output)  # before any input is read
            pairs = shard_of(dataset.row_paths(found), shard)
        else:
            pairs = batch.sharded(found, shard, output, ".dac", DAC_EXTS)

        def start(rep):
            model = registry.load_model(model_name, device, precision)
            bitrate = model.bitrate(kbps, n_codebooks, notice=lambda m: batch.message(f"dacli: {m}"))
            channels = _channels_of(pairs[0][0]) if len(pairs) == 1 else None
            if not bitrate.fits(channels or 1):
                raise click.UsageError(bitrate.lowest(channels or 1))
            sink = None
            if fmt == "parquet":
                dataset.made_otherwise(output, made, model, bitrate)
                sink = dataset.ShardWriter(output, dataset.shard_names(dataset.run_tag(shard)),
                                           rows_per_shard or dataset.ROWS_PER_SHARD)
            run.update(model=model, bitrate=bitrate, tokenizer=codec.Tokenizer(
                model, bitrate, window_seconds, codec.check_bandwidth(bandwidth, model.sample_rate), sink=sink))
            if not quiet:
                rates = "; ".join(bitrate.describe(c) for c in ([channels] if channels else [1, 2]))
                click.echo(f"model {model.name} ({model.precision}): {rates}", err=True)

        def present(rel):
            held = run["held"]
            return f"{rel} (held by {held[rel.as_posix()]})" if rel.as_posix() in held else None

        def work(src, dst, rep):
            bar, tick = rep.audio_bar(src.name, codec.duration(src))
            try:
                return run["tokenizer"].submit(src, dst, tick)
            finally:
                bar.close()

        def report(outcomes, seconds):  # into the output folder, when there is one (beside a dataset's)
            batch.write_report(outcomes, output, run["model"].precision if run else precision, seconds, quiet,
                               beside=fmt == "parquet")

        into_folder = output not in (None, STDIO) and not (len(pairs) == 1 and pairs[0][1] == output)
        _exit_on_failures(batch.run(
            pairs, overwrite, quiet, work, "encoded", lambda: run["tokenizer"].finish(),
            report if into_folder else None, present if fmt == "parquet" else None, start,
            differs=lambda src, dst: codec.made_otherwise(dst, run["model"], run["bitrate"])))


def _channels_of(src: Path):
    """One audio input's channel count for the summary line (None where its own error comes later)."""
    from . import audio
    try:
        return audio.info(src).channels
    except (DacliError, OSError):
        return None


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output audio file (one input), '-' for stdout, or folder (default: beside the input).")
@click.option("--format", "fmt", type=click.Choice(["wav", "flac", "raw"]), default=None,
              help="Output format (default: from the output name, else wav; with -o -, what is written to "
                   "stdout). 16-bit PCM; raw (headerless little-endian) with --raw-codes only.")
@click.option("--raw-codes", is_flag=True,
              help="The input is a raw token stream (docs/FORMAT.md, Raw codes: each frame CHANNELS x "
                   "N_CODEBOOKS little-endian uint16), decoded as it arrives, audio at the model rate written "
                   "as it becomes final (no loudness restore): an audio LM's tokens, live.")
@click.option("--channels", type=int, default=None, callback=positive("--channels", True),
              help="With --raw-codes: channels of the stream (default 1).")
@N_CODEBOOKS
@click.option("--lookahead", type=int, default=None, metavar="FRAMES",
              help="With --raw-codes: frames to wait for before a frame plays (default: the exact latency, "
                   "the offline decode's samples; fewer: earlier audio, deviating).")
@MODEL_RUN
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="onnx: run the graphs of 'dacli export' (--model DIR) with onnxruntime, without torch "
                   "(fp32, CPU); the same windows, loudness restore, low-pass and resampling.")
@BATCH
def decode(inputs, output, fmt, raw_codes, channels, n_codebooks, lookahead, model_name, device, precision,
           runtime, window_seconds, overwrite, shard, quiet):
    """Decode .dac files or folders, token datasets (folders of Parquet shards, .parquet files) and arrays
    of codes (.npy, with --model) back to audio at the original rate, channels and length.

    The model recorded in each file is used (its weights are checked); --model overrides it, and is
    needed for files written by the official tool. '-' reads the .dac from stdin or writes the audio
    to stdout: WAV is streamed as it is decoded (playback starts after the first second; on an error
    the stream stops short and the exit status says so), FLAC (--format flac) once complete:

    \b
    dacli decode x.dac -o - | ffplay -
    lm_tokens | dacli decode --raw-codes - -o - --channels 1 --n-codebooks 9 | aplay
    """
    named = output.suffix.lower()[1:] if output is not None and output.suffix.lower() in (".wav", ".flac") else None
    if fmt is not None and named is not None and fmt != named:
        raise click.UsageError(f"--format {fmt} contradicts the output name {output}")
    fmt = fmt or named or "wav"
    if runtime == "onnx" and (model_name is None or not registry.is_export(model_name)):
        raise click.UsageError("--runtime onnx needs --model DIR, a folder written by 'dacli export'")
    if runtime == "torch" and registry.is_export(model_name):
        raise click.UsageError(f"{model_name}: an exported model (dacli export); decode with it with --runtime onnx")
    if runtime == "onnx" and (precision not in ("auto", "fp32") or device == "cuda"):
        raise click.UsageError("--runtime onnx computes in fp32 on the CPU")
    if raw_codes:
        from . import pipe
        if fmt == "flac":
            raise click.UsageError("--raw-codes writes WAV or raw PCM as it goes, not FLAC")
        model = registry.load_model(model_name, device, precision, runtime)
        return pipe.decode_files(inputs, output, model, fmt, channels or 1, n_codebooks, lookahead)
    if fmt == "raw" or channels is not None or n_codebooks is not None or lookahead is not None:
        raise click.UsageError("--format raw, --channels, --n-codebooks and --lookahead go with --raw-codes")
    with batch.pipes(inputs, output, "stdin.dac", "stdout." + fmt, stream_out=fmt == "wav") as (inputs, output):
        from .tokens import Sources  # token datasets and arrays of codes: rows and arrays, each its own output
        sources = Sources([i for i in inputs if Sources.claims(i)], output, fmt, shard)
        files = [i for i in inputs if not Sources.claims(i)]
        if output == STDIO:  # streamed; pipes() has checked that there is one input file
            pairs = [(src, STDIO) for src, _ in (find_inputs(files, DAC_EXTS) + sources.pairs)]
            if len(pairs) > 1:
                raise DacliError("-o - writes one file to stdout: this table has several rows")
        else:
            pairs = sources.pairs + (batch.sharded(find_inputs(files, DAC_EXTS), shard, output, "." + fmt,
                                                   {".wav", ".flac"}) if files else [])
        for reason in sources.broken:
            click.echo(f"dacli: error: {reason}", err=True)
        if sources.broken and not pairs:
            raise SystemExit(1)
        models: dict = {}

        def load(name):
            if name not in models:
                models[name] = registry.load_model(name, device, precision, runtime)
            return models[name]

        def work(src, dst, rep):
            out = sys.stdout.buffer if dst == STDIO else dst
            bar, tick = rep.audio_bar(src.name, sources.duration(src) if src in sources.rows else codec.duration(src))
            try:
                if src in sources.rows or Sources.claims(src):
                    sources.decode(src, out, load, model_name, fmt, window_seconds, tick)
                else:
                    codec.decode_file(load(registry.model_for_file(src, model_name)), src, out, fmt, window_seconds,
                                      progress=tick)
            finally:
                bar.close()

        def check(src):  # a row is checked when its shard is read
            if src not in sources.rows:
                batch.check_input(src)

        _exit_on_failures(batch.run(pairs, overwrite, quiet, work, "decoded", check=check) + len(sources.broken))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output .dac file (one input) or folder.")
@KBPS
@N_CODEBOOKS
@OVERWRITE
@QUIET
def transcode(inputs, output, kbps, n_codebooks, overwrite, quiet):
    """Rewrite .dac files at a lower bitrate from their codes alone (no model, no re-encoding): the
    first codebooks are kept. --kbps is the file's total rate over its channels; asking for more
    codebooks than a file has is an error (codes cannot be added without the audio)."""
    if (kbps is None) == (n_codebooks is None):
        raise click.UsageError("give exactly one of --kbps and --n-codebooks")

    def work(src, dst, rep):
        header, codes = container.read(src)
        try:
            n = container.codebooks_to_keep(header, n_codebooks, kbps)
        except DacliError as e:
            raise DacliError(f"{src}: {e}") from None
        container.write(dst, *container.truncate_codebooks(header, codes, n))

    def differs(src, dst):  # an existing output stays only if it has the codebooks this run would give it
        try:
            want = container.codebooks_to_keep(container.read_header(src), n_codebooks, kbps)
        except DacliError:  # the input fails with its own reason when it is read
            return None
        return codec.made_otherwise(dst, None, want)

    with batch.pipes(inputs, output, "stdin.dac", "stdout.dac") as (inputs, output):
        _exit_on_failures(batch.run(batch.destinations(find_inputs(inputs, DAC_EXTS), output, ".dac", DAC_EXTS),
                                    overwrite, quiet, work, "transcoded", differs=differs))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(files, as_json):
    """Describe .dac files (model, rates, channels, duration, codebooks, bitrate, compression ratio) and
    token datasets (shards, rows, hours of audio, models, codebooks)."""
    failed = False
    rows = []
    for f in files:
        try:
            rows.append(codec.describe_file(f))
        except DacliError as e:
            click.echo(f"dacli: error: {e}", err=True)
            failed = True
    if as_json:
        click.echo(strict_json(rows[0] if len(rows) == 1 else rows))
    else:
        for r in rows:
            width = max(len(k) for k in r)
            click.echo("\n".join(f"{k:<{width}}  {v}" for k, v in r.items()) + "\n")
    if failed:
        raise SystemExit(1)


@cli.command("export")
@click.argument("model_name", metavar="MODEL")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@OVERWRITE
def export_cmd(model_name, output, overwrite):
    """Write MODEL (a name or checkpoint, as --model takes it) as ONNX step graphs: encoder_step.onnx (a
    push of audio and the encoder's state -> the codes it makes final and the next state),
    decoder_step.onnx (codes -> audio, likewise) and dacli-onnx.json (docs/FORMAT.md, ONNX graphs), for
    'dacli decode --runtime onnx --model DIR' without torch, the browser player (web/) or any ONNX runtime.
    """
    from .export import export
    info = export(model_name, output, overwrite)
    click.echo(f"{output}: {info['name']} ({info['weights_hash'][:12]}), {info['sample_rate']} Hz, "
               f"{info['n_codebooks']} codebooks")


@cli.command()
def models():
    """List the bundled and official models: name, kind, version (the bundled model's version, an
    official release's tag) and where each is on disk."""
    for name, kind, path, version in registry.models():
        where = str(path) if path else ("not downloaded: dacli download " + name if kind == "official" else "missing")
        click.echo(f"{name:<14} {kind:<9} {version:<7} {where}")
    click.echo(f"cache: {registry.cache_dir()}")


@cli.command()
@click.argument("name", type=click.Choice(sorted(registry.OFFICIAL)))
@click.option("--base-url", default=None, hidden=True, help="Release base URL (for testing mirrors).")
@QUIET
def download(name, base_url, quiet):
    """Download an official DAC release into the user cache."""
    bar = batch.progress(unit="B", unit_scale=True, desc=name, disable=quiet)

    def tick(n, total):
        if total and bar.total != total:
            bar.total = total
        bar.update(n)

    try:
        path = registry.download(name, base=base_url, progress=tick)
    finally:
        bar.close()
    click.echo(str(path))


cli.add_command(cli_measure.bench_cmd)
cli.add_command(cli_measure.eval_cmd)
