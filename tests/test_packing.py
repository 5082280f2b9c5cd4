"""Windows of many files in shared rows of one shape (dacli.packing): in float32 the codes equal those
of each file encoded alone, bit for bit, whatever shares its rows; in the other precisions rows are
not shared, so a file's codes do not depend on the other files either."""

import contextlib
import math

import numpy as np
import pytest
import soundfile as sf

from dacli import codec, packing, registry
from dacli.model import build

from conftest import FIXTURES

TINY = str(FIXTURES / "tiny44.pth")


def clips(model, seed=0):
    """Real music cut into files of many lengths: under one frame, one window exactly, a window and a
    frame, several windows; mono and stereo (the channels differ)."""
    x, _ = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    x = x.mean(1)
    width = codec.window_frames(model, None, codec.ENCODE_CHUNK_SECONDS) * model.hop_length
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
    p = packing.Packer(model, model.n_codebooks, codec.window_frames(model, None, codec.ENCODE_CHUNK_SECONDS), 1)
    got = {}
    for i in order:
        got.update(p.add(i, files[i]))
    got.update(p.flush())
    return got, p


def test_gap_covers_the_widest_layer():
    """The 44.1 kHz architecture: the dilation-9 units after the strides 2·4·8 read 27 positions of 64
    samples (1,728 samples) on either side: 4 frames of 512."""
    assert packing.gap_frames(build("44khz-8kbps")) == 4


def test_fp32_codes_equal_each_file_encoded_alone():
    model = registry.load_model(TINY, "cpu", "fp32")
    files = clips(model)
    alone = [codec.encode_array(model, f) for f in files]
    got, p = packed(model, files, range(len(files)))
    pieces = sum(f.shape[0] * len(list(codec.windows(math.ceil(f.shape[1] / model.hop_length), 172, 9)))
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
    monkeypatch.setattr(packing, "masked", lambda *a: contextlib.nullcontext())
    got, _ = packed(model, files, range(len(files)))
    assert any(not np.array_equal(got[i], codec.encode_array(model, f)) for i, f in enumerate(files))


@pytest.mark.parametrize("precision", ["mixed", "bf16"])
def test_other_precisions_do_not_depend_on_the_neighbours(precision):
    model = registry.load_model(TINY, "cpu", precision)
    files = clips(model, seed=2)
    a, p = packed(model, files, range(len(files)))
    b, _ = packed(model, files, reversed(range(len(files))))
    assert not p.share
    for i in range(len(files)):
        np.testing.assert_array_equal(a[i], b[i])


def test_files_encoder_writes_what_encode_file_writes(tmp_path, monkeypatch):
    """Short files packed, a long one streamed on its own, a corrupt one failing alone: every output
    byte-identical to codec.encode_file's."""
    model = registry.load_model(TINY, "cpu", "fp32")
    monkeypatch.setattr(packing, "PACK_SECONDS", 5.0)
    files = clips(model, seed=3)
    srcs = []
    for i, f in enumerate(files):
        srcs.append(tmp_path / f"{i}.wav")
        sf.write(srcs[-1], f.T, 48000 if i % 2 else 44100, subtype="PCM_16")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    srcs.insert(3, tmp_path / "bad.wav")
    enc = packing.FilesEncoder(model)
    done = []
    for i, s in enumerate(srcs):
        done += enc.submit(i, s, tmp_path / f"{i}.packed.dac")
    done += enc.finish()
    assert sorted(d[0] for d in done) == list(range(len(srcs)))
    for i, header, err in done:
        if srcs[i].name == "bad.wav":
            assert header is None and "bad.wav" in str(err)
            continue
        assert err is None
        codec.encode_file(model, srcs[i], tmp_path / f"{i}.alone.dac")
        assert (tmp_path / f"{i}.packed.dac").read_bytes() == (tmp_path / f"{i}.alone.dac").read_bytes(), srcs[i]
        assert header.duration == sf.info(str(srcs[i])).duration
