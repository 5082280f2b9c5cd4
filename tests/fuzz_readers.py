"""Fuzzing the readers of .dac files: the native container, the official tool's legacy files, and the
decode path behind them. ``make test`` runs a short fixed budget (tests/test_fuzz.py); a long run:

    .venv/bin/python tests/fuzz_readers.py -runs=1000000           # coverage-guided (atheris)
    .venv/bin/python tests/fuzz_readers.py --mutate 200000         # silent-corruption campaign

Coverage-guided (atheris, libFuzzer's engine driving Python): it learns which inputs reach new
branches of dacli's readers, so it gets past magic numbers, lengths and CRCs that blind mutation
rarely gets right; libFuzzer also enforces the per-input timeout and the RSS limit and reports
crashes by signal. The first byte of an input picks what it is fed to:

    0  native reader, bytes as they are
    1  native reader, after fixing the header CRC and the CRCs of raw blocks (reaches the field checks)
    2  legacy reader, then the decode of what it accepts (tiny model)
    3  native decode path: model hash set to the tiny model's, CRCs fixed, then decode to a WAV file

Anything but a DacliError (one-line refusal) is a finding: an exception ends the run with its
traceback, a signal, a hang (over -timeout) or memory beyond -rss_limit_mb is reported by libFuzzer.

``--mutate N`` applies N random mutations (bit flips, byte changes, insertions, deletions, truncations)
to valid native files and counts silent corruptions: a mutant that reads without error but gives other
codes or another header than its original. The CRCs should make that count 0.
"""

import os

# The decode path builds oneDNN primitives for each input length it sees, and keeps up to 1,024 of them
# (about 1.3 GB with the tiny model). The fuzzer feeds thousands of lengths; the command line feeds a
# few per file. Capping the cache keeps the RSS limit a measure of dacli's readers, not of that cache.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse  # noqa: E402
import random  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: F401,E402  (imported before instrumentation: only dacli's own code is instrumented)

import atheris  # noqa: E402

with atheris.instrument_imports(include=["dacli.container", "dacli.legacy", "dacli.codec", "dacli.fileio"]):
    from dacli import codec, container, legacy
    from dacli.errors import DacliError

from dacli.registry import load_model

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL = load_model(FIXTURES / "tiny44.pth", "cpu", "fp32")
MAX_DECODE_FRAMES = 400       # decode only small files: the harness is about parsing, not model speed
WORK = Path(tempfile.mkdtemp(prefix="dacli-fuzz-"))
torch.set_num_threads(1)


def native_seeds():
    """Small valid native files: mono and stereo, raw and zstd blocks, several block sizes."""
    rng = np.random.default_rng(0)
    out = []
    for channels, frames, fpb, nq, zeros in [(1, 20, 256, 9, False), (2, 40, 16, 4, False), (1, 64, 32, 9, True),
                                             (2, 9, 4, 2, True), (1, 1, 1, 1, False)]:
        mlen = frames * MODEL.hop_length - 100
        h = container.Header(model_sample_rate=44100, hop_length=512, original_sample_rate=48000,
                             channels=channels, n_codebooks=nq, bits_per_code=10,
                             original_length=round(mlen * 48000 / 44100), model_length=mlen, n_frames=frames,
                             input_loudness=-23.0, gain_db=7.0, model_hash=bytes.fromhex(MODEL.weights_hash),
                             model_name="tiny44.pth", frames_per_block=fpb)
        codes = np.zeros((channels, nq, frames), np.int64) if zeros else rng.integers(0, 1024, (channels, nq, frames))
        out.append(h.to_bytes() + container.encode_blocks(h, codes))
    return out


def legacy_seeds():
    return [(FIXTURES / n).read_bytes() for n in ("tiny44_mono_short.dac", "tiny44_mono_nq3.dac")]


def fix_crcs(buf, model_hash=None):
    """Make the header CRC (at its declared size) and the raw blocks' CRCs right, and optionally put
    a model hash in: lets mutated fields reach the checks behind the CRCs."""
    if len(buf) < container._FIXED.size + 4 or buf[:8] != container.MAGIC:
        return buf
    buf = bytearray(buf)
    if model_hash is not None:
        buf[64:96] = model_hash
    size = struct.unpack_from("<H", buf, 10)[0]
    if not container._FIXED.size + 4 <= size <= len(buf):
        return bytes(buf)
    struct.pack_into("<I", buf, size - 4, zlib.crc32(bytes(buf[:size - 4])))
    pos = size
    while pos + 9 <= len(buf):
        coding, n, _ = struct.unpack_from("<BII", buf, pos)
        payload = bytes(buf[pos + 9:pos + 9 + n])
        if coding == container.RAW:
            struct.pack_into("<I", buf, pos + 5, zlib.crc32(payload))
        pos += 9 + n
    return bytes(buf)


def decode(path):
    dst = WORK / "out.wav"
    try:
        codec.decode_file(MODEL, path, dst)
    finally:
        if dst.exists():
            dst.unlink()


def one_input(data):
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 0:
            container.parse(body)
        elif mode == 1:
            container.parse(fix_crcs(body))
        elif mode == 2:
            lg = legacy.parse(body)
            if lg.codes.shape[-1] <= MAX_DECODE_FRAMES and lg.codes.shape[0] <= 2:
                legacy.decode(MODEL, lg)
        else:
            body = fix_crcs(body, bytes.fromhex(MODEL.weights_hash))
            header, _ = container.parse(body)
            if header.n_frames <= MAX_DECODE_FRAMES and header.channels <= 2 and header.original_length < 10 ** 6:
                path = WORK / "in.dac"
                path.write_bytes(body)
                decode(path)
    except DacliError:
        pass


def mutate(buf, rng):
    b = bytearray(buf)
    for _ in range(rng.randint(1, 4)):
        op, i = rng.randrange(6), rng.randrange(max(1, len(b)))
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.randrange(256)
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[i:i + rng.randint(1, 8)]
        elif op == 4:
            del b[i:]
        elif op == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 16)]
    return bytes(b)


def campaign(n, seed=0):
    """Random mutations of valid native files → (inputs, refused, identical, silent corruptions)."""
    rng = random.Random(seed)
    seeds = [(s, container.parse(s)) for s in native_seeds()]
    refused = same = corrupt = 0
    t0 = time.time()
    for i in range(n):
        original, (h0, c0) = seeds[i % len(seeds)]
        m = mutate(original, rng)
        if m == original:
            same += 1
            continue
        try:
            h, c = container.parse(m)
        except DacliError:
            refused += 1
            continue
        if h == h0 and np.array_equal(c, c0):
            same += 1
        else:
            corrupt += 1
            print(f"silent corruption: mutant {i} of seed {i % len(seeds)}: {m.hex()}", flush=True)
    return {"inputs": n, "refused": refused, "identical": same, "silent_corruptions": corrupt,
            "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    ap.add_argument("--mutate", type=int, default=0)
    args, rest = ap.parse_known_args()
    if args.mutate:
        import resource
        res = campaign(args.mutate)
        res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(res, flush=True)
        sys.exit(1 if res["silent_corruptions"] else 0)
    corpus = WORK / "seeds"
    corpus.mkdir()
    for i, s in enumerate(native_seeds()):
        for mode in (0, 1, 3):
            (corpus / f"native{i}_{mode}").write_bytes(bytes([mode]) + s)
    for i, s in enumerate(legacy_seeds()):
        (corpus / f"legacy{i}").write_bytes(bytes([2]) + s)
    defaults = ["-max_len=16384", "-rss_limit_mb=2048", "-timeout=20", "-print_final_stats=1"]
    atheris.Setup([sys.argv[0], *defaults, *rest, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
