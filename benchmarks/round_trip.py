"""Files through ``dacli encode`` and ``decode`` as a user's would (loudness normalisation included),
for the benchmarks that measure what comes back (pause_floor.py, oracle_repairs.py)."""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dacli import audio, codec  # noqa: E402
from dacli.fileio import AUDIO_EXTS, find_inputs  # noqa: E402
from dacli.registry import load_model  # noqa: E402


def round_trips(names, data, kbps):
    """For each weights file in ``names`` (none: the bundled model), yields (label, n_codebooks, pairs);
    ``pairs`` yields (path, original, rate, decoded) for each audio file of ``data``, arrays (samples,
    channels) at the original's rate. Take each model's pairs before the next model."""
    files = [p for p, _ in find_inputs([data], AUDIO_EXTS - {".raw"})]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or [None]:
            model = load_model(name, device="cpu", precision="fp32")
            n = model.n_codebooks_for_kbps(kbps)

            def pairs(model=model, n=n):
                for path in files:
                    codec.encode_file(model, path, Path(tmp) / "x.dac", n_codebooks=n)
                    codec.decode_file(model, Path(tmp) / "x.dac", Path(tmp) / "y.wav")
                    x, rate = audio.read(path)
                    yield path, x, rate, audio.read(Path(tmp) / "y.wav")[0]
            yield name or "bundled", n, pairs()


def parse_args(doc, data, argv=None):
    """The command line both round-trip benchmarks share: --model (repeatable), --data (default
    ``data``), --kbps, --json; ``doc``'s first paragraph is the description."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="weights (repeatable); default: the bundled model")
    ap.add_argument("--data", default=data)
    ap.add_argument("--kbps", type=float, default=8.0)
    ap.add_argument("--json")
    return ap.parse_args(argv)
