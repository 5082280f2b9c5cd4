"""The window engine (dacli.windows), through which every encode goes: windows of many files in shared
rows of one shape; in float32 the codes equal those of a one-pass encode of each file, bit for bit,
whatever shares its rows; in the other precisions rows are not shared, so a file's codes do not depend
on the other files either. Files through codec.Tokenizer: the same bytes as encode_file, bad inputs
failing alone, bugs stopping the run."""

import contextlib
import math

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dacli import bounds, codec, registry, windows
from dacli.model import build

from conftest import FIXTURES

TINY = str(FIXTURES / "tiny44.pth")


def clips(model, seed=0):
    """Real music cut into files of many lengths: under one frame, one window exactly, a window and a
    frame, several windows; mono and stereo (the channels differ)."""
    x, _ = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    x = x.mean(1)
    width = windows.window_frames(model, None, windows.ENCODE_WINDOW_SECONDS) * model.hop_length
    rng = np.random.default_rng(seed)
    lengths = [300, model.hop_length, width, width + model.hop_length, 3 * width + 777]
    lengths += [int(rng.uniform(0.2, 6.0) * model.sample_rate) for _ in range(7)]
    out = []
    for k, n in enumerate(lengths):
        at = int(rng.integers(0, len(x) - n))
        y = x[at:at + n][None]
        if k % 3 == 1:
            y = np.concatenate([y, 0.5 * x[at + 999:at + 999 + n][None]])
        out.append(np.ascontiguousarray(y))
    return out


def packed(model, files, order):
    p = windows.Packer(model, model.n_codebooks, windows.window_frames(model, None, windows.ENCODE_WINDOW_SECONDS), 1)
    got = {}
    for i in order:
        got.update(p.add(i, files[i]))
    got.update(p.flush())
    return got, p


def test_gap_covers_the_widest_layer():
    """The 44.1 kHz architecture: the dilation-9 units after the strides 2·4·8 read 27 positions of 64
    samples (1,728 samples) on either side: 4 frames of 512."""
    assert windows.gap_frames(build("44khz-8kbps")) == 4


def test_fp32_codes_equal_each_file_encoded_alone():
    model = registry.load_model(TINY, "cpu", "fp32")
    files = clips(model)
    alone = [model.encode(f).numpy() for f in files]  # one pass each, no windows at all
    for f, a in zip(files, alone):
        assert (windows.encode_array(model, f) != a).mean() <= bounds.FP32_CODES_MOVED
    got, p = packed(model, files, range(len(files)))
    pieces = sum(f.shape[0] * len(list(windows.plan(math.ceil(f.shape[1] / model.hop_length), 172, 9)))
                 for f in files)
    assert p.calls < pieces * 0.8  # rows were shared
    for i, f in enumerate(files):
        assert got[i].dtype == np.int32 and got[i].shape == alone[i].shape
        np.testing.assert_array_equal(got[i], alone[i], err_msg=f"file {i}, {f.shape}")
    again, _ = packed(model, files, reversed(range(len(files))))  # other neighbours, other places in the rows
    for i in range(len(files)):
        np.testing.assert_array_equal(again[i], alone[i])


def test_without_the_mask_the_codes_change(monkeypatch):
    """What the mask is for: neighbours leaking into a window through the layers' reach."""
    model = registry.load_model(TINY, "cpu", "fp32")
    files = clips(model, seed=1)
    monkeypatch.setattr(windows, "masked", lambda *a: contextlib.nullcontext())
    got, _ = packed(model, files, range(len(files)))
    assert any(not np.array_equal(got[i], windows.encode_array(model, f)) for i, f in enumerate(files))


@pytest.mark.parametrize("precision", ["mixed", pytest.param("bf16", marks=pytest.mark.slow)])  # bf16 is slow
def test_other_precisions_do_not_depend_on_the_neighbours(precision):
    model = registry.load_model(TINY, "cpu", precision)
    files = clips(model, seed=2)
    a, p = packed(model, files, range(len(files)))
    b, _ = packed(model, files, reversed(range(len(files))))
    assert not p.share
    for i in range(len(files)):
        np.testing.assert_array_equal(a[i], b[i])


def test_tokenizer_writes_what_encode_file_writes(tmp_path):
    """Short files and longer ones, at two rates, one corrupt, all in one tokenizer: every output
    byte-identical to codec.encode_file's of the file alone; the corrupt one fails alone."""
    model = registry.load_model(TINY, "cpu", "fp32")
    files = clips(model, seed=3)
    srcs = []
    for i, f in enumerate(files):
        srcs.append(tmp_path / f"{i}.wav")
        sf.write(srcs[-1], f.T, 48000 if i % 2 else 44100, subtype="PCM_16")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    srcs.insert(3, tmp_path / "bad.wav")
    tokenizer = codec.Tokenizer(model)
    done = []
    for i, s in enumerate(srcs):
        done += tokenizer.submit(s, tmp_path / f"{i}.packed.dac")
    done += tokenizer.finish()
    assert sorted(o.src for o in done) == sorted(map(str, srcs))
    for o in done:
        i = srcs.index(Path(o.src))
        if srcs[i].name == "bad.wav":
            assert o.status == "failed" and o.header is None and "bad.wav" in o.reason
            continue
        assert o.status == "ok" and o.error is None and o.dst == str(tmp_path / f"{i}.packed.dac")
        codec.encode_file(model, srcs[i], tmp_path / f"{i}.alone.dac")
        assert (tmp_path / f"{i}.packed.dac").read_bytes() == (tmp_path / f"{i}.alone.dac").read_bytes(), srcs[i]
        assert o.header.duration == o.seconds == sf.info(str(srcs[i])).duration


def test_a_bug_stops_the_run_instead_of_failing_a_file(tmp_path, monkeypatch):
    """Only the errors a bad input causes fail one file; a TypeError inside dacli propagates."""
    model = registry.load_model(TINY, "cpu", "fp32")
    sf.write(tmp_path / "a.wav", clips(model)[5].T, 44100)

    def broken(*a, **k):
        raise TypeError("a bug")
    monkeypatch.setattr(codec, "model_input", broken)
    with pytest.raises(TypeError, match="a bug"):
        codec.Tokenizer(model).submit(tmp_path / "a.wav", tmp_path / "a.dac")
    assert not (tmp_path / "a.dac").exists()


def test_an_input_that_fails_midway_leaves_the_others_whole(tmp_path, monkeypatch):
    """A file whose second pass breaks after some of its windows are in rows with other files' windows:
    it fails alone, and the files sharing those rows are written as encode_file writes them."""
    model = registry.load_model(TINY, "cpu", "fp32")
    files = clips(model, seed=4)
    for i, f in enumerate(files):
        sf.write(tmp_path / f"{i}.wav", f.T, 44100, subtype="PCM_16")
    real = codec.model_input
    longest = f"{max(range(len(files)), key=lambda i: files[i].shape[1])}.wav"  # read in several blocks

    def breaking(src, header):
        for k, y in enumerate(real(src, header)):
            if Path(src).name == longest and k == 1:
                raise codec.DacliError(f"{src}: corrupt audio (cut)")
            yield y
    monkeypatch.setattr(codec, "model_input", breaking)
    tokenizer = codec.Tokenizer(model)
    done = []
    for i in range(len(files)):
        done += tokenizer.submit(tmp_path / f"{i}.wav", tmp_path / f"{i}.dac")
    done += tokenizer.finish()
    assert {Path(o.src).name: o.status for o in done if o.status != "ok"} == {longest: "failed"}
    monkeypatch.setattr(codec, "model_input", real)
    for o in done:
        if o.status == "ok":
            codec.encode_file(model, o.src, tmp_path / "alone.dac")
            assert Path(o.dst).read_bytes() == (tmp_path / "alone.dac").read_bytes(), o.src
