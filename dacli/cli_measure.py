"""The measuring commands of ``dacli``: ``bench`` (speed and memory of encode and decode) and ``eval``
(quality with the DAC paper's metrics); :mod:`dacli.cli` adds them to the command line."""

from pathlib import Path

import click

from . import batch
from .cli_options import DEVICE, PRECISION, QUIET, WINDOW, strict_json


@click.command("bench")
@click.option("--model", "model_name", default="44khz-8kbps", show_default=True, metavar="NAME|PATH",
              help="A preset (random weights unless downloaded), the bundled model, or a checkpoint.")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Audio length to time.")
@click.option("--channels", type=int, default=1, show_default=True)
@click.option("--input", "source", type=click.Path(exists=True, dir_okay=False),
              help="A recording to loop as test audio (default: synthetic).")
@DEVICE
@PRECISION
@WINDOW
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(model_name, seconds, channels, source, device, precision, window_seconds, as_json):
    """Time file-to-file encode and decode: real-time factors, peak RSS, GFLOP/s."""
    from . import bench
    res = bench.bench(model_name, source, seconds, channels, device, precision, window_seconds)
    click.echo(as_json(res) if as_json else bench.report(res))


@click.command("eval")
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
@DEVICE
@QUIET
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
        bar = batch.progress(total=None, unit="run", disable=quiet)
        rows, summary = evaluate.evaluate_codecs(codecs, paths[0], not no_visqol, device,
                                                 progress=lambda c, f: (bar.set_description(c), bar.update(1)))
        bar.close()
    else:
        if len(paths) != 2:
            raise click.UsageError("give REF and DEGRADED (files or folders), or --codec SPEC SOURCE_DIR")
        rows, summary = evaluate.evaluate_pairs(*paths, not no_visqol)
    if csv_path:
        evaluate.write_csv(rows, csv_path)
    if plot_path:
        evaluate.plot(summary, plot_path)
    if as_json:
        click.echo(strict_json({"files": rows, "summary": summary}))
    else:
        if not codecs:
            for r in rows:
                click.echo(f"{r['file']}: " + ", ".join(f"{k} {r[k]:.3f}" for k in evaluate.METRICS))
        click.echo(evaluate.table(summary))
