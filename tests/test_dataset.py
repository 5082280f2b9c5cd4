"""Token datasets through the real command line: `dacli encode --format parquet` against `.dac` files of
the same inputs (HF datasets, pyarrow, polars and dacli.read_dataset read the same codes), decoding
rows, .npy arrays and tables of codes alone, `dacli info`, resuming after SIGKILL (every input exactly
once), job-array shards, foreign and truncated shards, bad rows, a full disk and usage errors."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import dacli
from dacli import dataset

from conftest import FIXTURES

TINY = str(FIXTURES / "tiny44.pth")


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dacli", *map(str, args)], capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), **kw)


def ok(*args):
    r = run(*args)
    assert r.returncode == 0, r.stderr
    return r


def one_line_error(r, *needles):
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert all(n in r.stderr for n in needles), r.stderr


def corpus(folder, n=6, seconds=(1, 2)):
    """Clips at 44.1, 48 and 22.05 kHz, mono and stereo, half of them in a subfolder."""
    rng = np.random.default_rng(n)
    for i in range(n):
        rate = (44100, 48000, 22050)[i % 3]
        path = folder / ("sub" if i % 2 else "") / f"c{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal((rate * seconds[i % len(seconds)], 1 + i % 2)), rate)
    return folder


def rows_of(out):
    """{path: count} over every shard: each input must appear exactly once."""
    counts = {}
    for s in dataset.shards(out):
        for p in pq.read_table(s, columns=["path"]).column("path").to_pylist():
            counts[p] = counts.get(p, 0) + 1
    return counts


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One corpus as .dac files and as a token dataset (fp32)."""
    root = tmp_path_factory.mktemp("ds")
    inp = corpus(root / "in")
    ok("encode", inp, "-o", root / "dac", "--model", TINY, "--precision", "fp32", "-q")
    ok("encode", inp, "-o", root / "tok", "--format", "parquet", "--model", TINY, "--precision", "fp32", "-q",
       "--rows-per-shard", "4")
    return root


def test_rows_load_as_they_are_and_equal_the_dac_files(encoded):
    import datasets
    import polars
    tok, dac = encoded / "tok", encoded / "dac"
    assert len(dataset.shards(tok)) == 2 and rows_of(tok) == {f"{'sub/' if i % 2 else ''}c{i:02d}.wav": 1
                                                              for i in range(6)}
    # the folder as it is, as each loader takes a folder: nothing in it but the shards
    ds = datasets.load_dataset("parquet", data_dir=str(tok), split="train", cache_dir=str(encoded / "hf"))
    assert ds.num_rows == 6
    for row in ds:
        codes, header = dacli.read_codes(dac / Path(row["path"]).with_suffix(".dac"))
        assert np.array_equal(np.asarray(row["codes"]), codes), row["path"]
        for f in dataset.HEADER_COLUMNS:
            want = getattr(header, f)
            want = want.hex() if f == "model_hash" else want
            assert row[f] == pytest.approx(want, rel=1e-6) if isinstance(want, float) else row[f] == want, f
    frame = polars.read_parquet(str(tok))
    assert sorted(frame["path"].to_list()) == sorted(ds["path"])
    assert sorted(pq.read_table(tok).column("path").to_pylist()) == sorted(ds["path"])
    meta = pq.read_schema(dataset.shards(tok)[0]).metadata
    assert meta[b"dacli.schema"] == dataset.SCHEMA_VERSION.encode()
    assert pq.read_metadata(dataset.shards(tok)[0]).row_group(0).column(1).compression == "ZSTD"
    seen = 0
    for row in dacli.read_dataset(tok):  # no torch, no model
        codes, header = dacli.read_codes(dac / Path(row["path"]).with_suffix(".dac"))
        assert np.array_equal(row["codes"], codes) and row["header"] == header
        seen += 1
    assert seen == 6
    r = subprocess.run([sys.executable, "-c", f"import sys, dacli; list(dacli.read_dataset({str(tok)!r})); "
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
    assert [p.name for p in tok.rglob("*") if not p.name.startswith("part-")] == []
    report = sorted(encoded.glob("tok.dacli-report-*.tsv"))[-1].read_text().splitlines()[2:]  # beside it
    assert {Path(ln.split("\t")[1]).parent for ln in report} == {tok}  # each input's shard
    assert all(Path(ln.split("\t")[1]).name.startswith("part-") for ln in report)


def test_the_schema_is_the_documented_one():
    doc = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    section = doc[doc.index("## Token datasets"):]
    for field in dataset.schema():
        assert f"`{field.name}`" in section, field.name
    assert f"version {dataset.SCHEMA_VERSION}" in section


def test_decoding_rows_is_decoding_the_dac_files(encoded, tmp_path):
    ok("decode", encoded / "tok", "-o", tmp_path / "rows", "--model", TINY, "--precision", "fp32", "-q")
    ok("decode", encoded / "dac", "-o", tmp_path / "files", "--model", TINY, "--precision", "fp32", "-q")
    rows = sorted(p.relative_to(tmp_path / "rows") for p in (tmp_path / "rows").rglob("*.wav"))
    assert rows == sorted(p.relative_to(tmp_path / "files") for p in (tmp_path / "files").rglob("*.wav"))
    assert len(rows) == 6
    for rel in rows:
        assert (tmp_path / "rows" / rel).read_bytes() == (tmp_path / "files" / rel).read_bytes(), rel
    one = dataset.shards(encoded / "tok")[0]
    ok("decode", one, "-o", tmp_path / "one", "--model", TINY, "--precision", "fp32", "-q")
    assert len(list((tmp_path / "one").rglob("*.wav"))) == 4


def test_info_summarises_a_dataset(encoded):
    r = ok("info", encoded / "tok", "--json")
    import json
    d = json.loads(r.stdout)
    seconds = sum(sf.info(p).duration for p in (encoded / "in").rglob("*.wav"))
    assert d["shards"] == 2 and d["rows"] == 6 and d["hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert d["models"] == {"tiny44.pth": 6} and d["codebooks"] == {"9": 6} and d["channels"] == {"1": 3, "2": 3}


def test_an_array_of_codes_decodes_at_the_model_rate(encoded, tmp_path):
    codes, header = dacli.read_codes(encoded / "dac" / "sub" / "c01.dac")
    model = dacli.load_model(TINY, "cpu", "fp32")
    want = model.decode(codes).numpy()
    for name, arr in (("three.npy", codes), ("two.npy", codes[0])):
        np.save(tmp_path / name, arr.astype(np.int64))
        ok("decode", tmp_path / name, "-o", tmp_path / (name + ".wav"), "--model", TINY, "--precision", "fp32", "-q")
        y, rate = sf.read(tmp_path / (name + ".wav"), dtype="float32", always_2d=True)
        ref = want[: arr.shape[0] if arr.ndim == 3 else 1]
        assert rate == model.sample_rate and y.shape == (codes.shape[2] * model.hop_length, ref.shape[0])
        assert np.abs(y.T - np.clip(ref[:, : y.shape[0]], -1, 1)).max() <= 1.01 / 32768, name
    # a table of codes alone decodes the same way, with --model
    pq.write_table(pa.table({"codes": [codes.astype(np.int16).tolist()]}), tmp_path / "lm.parquet")
    ok("decode", tmp_path / "lm.parquet", "-o", tmp_path / "lm", "--model", TINY, "--precision", "fp32", "-q")
    assert (tmp_path / "lm" / "row-000000.wav").read_bytes() == (tmp_path / "three.npy.wav").read_bytes()
    one_line_error(run("decode", tmp_path / "lm.parquet", "-o", tmp_path / "x"), "records no model; pass --model")
    one_line_error(run("decode", tmp_path / "two.npy", "-o", tmp_path / "x.wav"), "records no model; pass --model")
    np.save(tmp_path / "float.npy", codes.astype(np.float32))
    np.save(tmp_path / "big.npy", codes + 5000)
    np.save(tmp_path / "many.npy", np.zeros((1, 40, 10), np.int32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    for name, needle in (("float.npy", "codes are integers"), ("big.npy", "exceeds the codebook size"),
                         ("many.npy", "40 codebooks"), ("junk.npy", "not a NumPy array file")):
        one_line_error(run("decode", tmp_path / name, "-o", tmp_path / "x.wav", "--model", TINY), name, needle)
    assert not (tmp_path / "x.wav").exists()


def test_bad_shards_and_rows_fail_alone(encoded, tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    for s in dataset.shards(encoded / "tok"):
        (tok / s.name).write_bytes(s.read_bytes())
    good = dataset.shards(tok)
    (tok / "part-truncated.parquet").write_bytes(good[0].read_bytes()[:3000])
    (tok / "part-foreign.parquet").write_bytes(b"PAR1 this is not parquet")
    # a shard of one good row, one of another model and one whose codes exceed the codebook
    rows = list(dacli.read_dataset(good[1]))
    other = replace(rows[0]["header"], model_hash=bytes(32))
    big = replace(rows[1]["header"], bits_per_code=11)
    dataset.write(tok / "part-mixed.parquet", [("ok.wav", rows[0]["header"], rows[0]["codes"]),
                                               ("other.wav", other, rows[0]["codes"]),
                                               ("big.wav", big, rows[1]["codes"] + 1024)])
    r = run("decode", tok, "-o", tmp_path / "wavs", "--model", TINY, "--precision", "fp32")
    one_line_error(r, "part-truncated.parquet: not a readable Parquet file", "part-foreign.parquet",
                   "part-mixed.parquet/other.wav: encoded with model", "part-mixed.parquet/big.wav")
    assert len(list((tmp_path / "wavs").rglob("*.wav"))) == 6 + 1
    assert not list((tmp_path / "wavs").rglob("*.part"))
    before = sorted(os.listdir(tok))
    r = run("encode", encoded / "in", "-o", tok, "--format", "parquet", "--model", TINY)
    one_line_error(r, "part-foreign.parquet: not a readable Parquet file")
    assert len(r.stderr.strip().splitlines()) == 1 and sorted(os.listdir(tok)) == before
    r = run("info", tok)
    one_line_error(r, "not a readable Parquet file")


def test_a_run_killed_then_resumed_writes_each_input_once(tmp_path):
    inp = corpus(tmp_path / "in", n=14, seconds=(2, 3))
    args = [sys.executable, "-m", "dacli", "encode", str(inp), "-o", str(tmp_path / "tok"), "--format", "parquet",
            "--model", TINY, "--precision", "fp32", "--rows-per-shard", "2", "-q"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    while len(dataset.shards(tmp_path / "tok")) < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    first = dataset.shards(tmp_path / "tok")
    assert 2 <= len(first) < 7, first
    for s in first:
        pq.read_table(s)  # complete
    done = rows_of(tmp_path / "tok")
    mtimes = {s: s.stat().st_mtime_ns for s in first}
    r = subprocess.run(args[:-1], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"encoded {14 - len(done)} file(s), skipped {len(done)}, failed 0" in r.stderr, r.stderr
    counts = rows_of(tmp_path / "tok")
    assert sorted(counts) == sorted(p.relative_to(inp).as_posix() for p in inp.rglob("*.wav"))
    assert set(counts.values()) == {1}
    assert mtimes == {s: s.stat().st_mtime_ns for s in first}
    assert not [n for n in os.listdir(tmp_path / "tok") if n.endswith(".part")]


def test_job_array_shards_write_disjoint_names(tmp_path):
    inp = corpus(tmp_path / "in", n=10, seconds=(1,))
    for k in (1, 2):
        ok("encode", inp, "-o", tmp_path / "tok", "--format", "parquet", "--model", TINY, "--shard", f"{k}/2", "-q")
    names = [s.name for s in dataset.shards(tmp_path / "tok")]
    assert len(names) == 2 and names[0].startswith("part-1of2-") and names[1].startswith("part-2of2-")
    assert set(rows_of(tmp_path / "tok").values()) == {1} and len(rows_of(tmp_path / "tok")) == 10


def test_a_full_disk_leaves_no_partial_shard(tmp_path):
    inp = corpus(tmp_path / "in", n=4, seconds=(3,))
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True, text=True)
    assert r.returncode == 0, f"this test mounts a small tmpfs (as root): mount failed: {r.stderr.strip()}"
    try:
        (small / "filler").write_bytes(bytes(60 * 1024))
        r = run("encode", inp, "-o", small / "tok", "--format", "parquet", "--model", TINY)
        one_line_error(r, "cannot write (no space left on device)", "failed 4")
        assert os.listdir(small / "tok") == [] or all(n.startswith("dacli-report") for n in os.listdir(small / "tok"))
    finally:
        subprocess.run(["umount", str(small)])


@pytest.mark.parametrize("args, needle", [
    (["-o", "x.dac"], "give -o FOLDER"),
    (["-o", "-"], "give -o FOLDER"),
    (["-o", "out", "--overwrite"], "--overwrite does not apply to --format parquet"),
    (["-o", "out", "--raw-codes"], "give -o FOLDER"),
])
def test_usage_errors(tmp_path, args, needle):
    inp = corpus(tmp_path / "in", n=1, seconds=(1,))
    r = run("encode", inp, "--format", "parquet", *args, cwd=tmp_path)
    one_line_error(r, needle)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.dac").exists()


def test_two_roots_with_one_path_are_refused(tmp_path):
    a, b = corpus(tmp_path / "a", n=1, seconds=(1,)), corpus(tmp_path / "b", n=1, seconds=(1,))
    r = run("encode", a, b, "-o", tmp_path / "tok", "--format", "parquet", "--model", TINY)
    one_line_error(r, "would both be row 'c00.wav'")
    r = run("encode", a, "-o", tmp_path / "f.parquet.d", "--rows-per-shard", "2", "--model", TINY)
    one_line_error(r, "--rows-per-shard goes with --format parquet")
    (tmp_path / "file").write_text("x")
    r = run("encode", a, "-o", tmp_path / "file", "--format", "parquet", "--model", TINY)
    one_line_error(r, "a token dataset is a folder")


def test_a_dataset_made_with_other_settings_is_refused_before_any_input_is_read(tmp_path):
    inp = corpus(tmp_path / "in", n=2, seconds=(1,))
    tok = tmp_path / "tok"
    ok("encode", inp, "-o", tok, "--format", "parquet", "--model", TINY, "--kbps", "8", "-q")
    before = {p.name: p.read_bytes() for p in tok.iterdir()}
    (inp / "later.wav").write_bytes(b"RIFF not audio")  # would fail if it were read
    r = run("encode", inp, "-o", tok, "--format", "parquet", "--model", TINY, "--kbps", "3")
    one_line_error(r, f"{tok}: holds c00.wav with 9 codebooks, asked 3; encode into another folder")
    assert len(r.stderr.strip().splitlines()) == 1 and "later.wav" not in r.stderr
    r = run("encode", inp, "-o", tok, "--format", "parquet", "--model", str(FIXTURES / "tiny24.pth"))
    one_line_error(r, "holds c00.wav made with model 'tiny44.pth'")
    assert {p.name: p.read_bytes() for p in tok.iterdir()} == before
    # the same settings go on; a report an earlier version left among the shards moves beside the folder
    (tok / "dacli-report-20260101-000000-1.tsv").write_text("# precision fp32\n")
    (inp / "later.wav").unlink()
    r = ok("encode", inp, "-o", tok, "--format", "parquet", "--model", TINY, "--kbps", "8")
    last = r.stderr.strip().splitlines()[-1]
    assert "skipped 2, failed 0" in last and f"report {tmp_path}/tok.dacli-report-" in last
    assert sorted(p.name for p in tok.iterdir()) == sorted(before)
    assert (tmp_path / "tok.dacli-report-20260101-000000-1.tsv").exists()
