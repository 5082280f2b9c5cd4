"""Overlap-save windowed inference: equality with one pass, independence from the window size,
receptive fields measured from the model, and awkward inputs."""

import numpy as np
import pytest
import soundfile as sf
import torch

from dacli import audio, codec, container, windows
from dacli.bounds import FP32_CODES_MOVED, FP32_ONE_PASS_AUDIO
from dacli.errors import DacliError
from dacli.model.receptive import context_frames

from conftest import FIXTURES


@pytest.fixture(scope="module")
def clip():
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    assert sr == 44100 and len(x) == 20 * sr
    return x[None]


@pytest.mark.parametrize("name", ["tiny44", "tiny24"])
def test_windowed_equals_one_pass(name, request, clip):
    model = request.getfixturevalue(name)
    x = clip if name == "tiny44" else clip[:, ::2][:, :24000 * 10]  # a 10 s 22.05→24 kHz-ish clip
    one = model.encode(x).numpy()
    assert one.shape[-1] == -(-x.shape[-1] // model.hop_length)
    dec_one = model.decode(one).numpy()
    for seconds in (1.0, 3.7):
        w = windows.encode_array(model, x, window_seconds=seconds)
        assert w.shape == one.shape
        assert (w != one).mean() <= FP32_CODES_MOVED, f"{(w != one).sum()} codes differ"
        d = windows.decode_array(model, one, window_seconds=seconds)
        assert d.shape == dec_one.shape
        np.testing.assert_allclose(d, dec_one, atol=FP32_ONE_PASS_AUDIO, rtol=0)  # one 16-bit step


def test_no_seam_at_window_boundaries(tiny44, clip):
    """Around every boundary of 1 s windows the decoded signal matches one pass as well as anywhere."""
    codes = tiny44.encode(clip[:, :44100 * 5]).numpy()
    one = tiny44.decode(codes).numpy()
    win = windows.decode_array(tiny44, codes, window_seconds=1.0)
    hop = tiny44.hop_length * windows.window_frames(tiny44, 1.0, None)
    err = np.abs(one - win)[0]
    at_seams = np.concatenate([err[b - 64:b + 64] for b in range(hop, err.shape[0], hop)])
    assert at_seams.max() < 1e-5


def test_result_independent_of_window_size_through_files(tmp_path, tiny44):
    src = FIXTURES / "music20s.flac"
    codec.encode_file(tiny44, src, tmp_path / "a.dac", window_seconds=2.0)
    codec.encode_file(tiny44, src, tmp_path / "b.dac", window_seconds=7.5)
    ha, ca = container.read(tmp_path / "a.dac")
    hb, cb = container.read(tmp_path / "b.dac")
    assert ha == hb and (ca != cb).mean() <= FP32_CODES_MOVED
    codec.decode_file(tiny44, tmp_path / "a.dac", tmp_path / "a.wav", window_seconds=2.0)
    codec.decode_file(tiny44, tmp_path / "a.dac", tmp_path / "b.wav", window_seconds=7.5)
    ya, _ = sf.read(tmp_path / "a.wav", dtype="int16")
    yb, _ = sf.read(tmp_path / "b.wav", dtype="int16")
    assert np.abs(ya.astype(int) - yb).max() <= 1


def test_receptive_field_is_measured(tiny44):
    """Perturbing one input sample changes codes no further away than the computed context."""
    C = context_frames(tiny44, "encoder")
    hop = tiny44.hop_length
    assert C * hop >= 3900  # half the encoder's span for the 2-4-8-8 strides is ~3989 samples
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (1, 64 * hop)).astype(np.float32)
    model = tiny44
    with torch.inference_mode():
        base = model.encoder(torch.from_numpy(x)[:, None])
        y = x.copy()
        y[0, 32 * hop] += 0.5
        moved = model.encoder(torch.from_numpy(y)[:, None])
    changed = np.nonzero((moved - base).abs().amax(1)[0].numpy() > 0)[0]
    assert changed.min() >= 32 - C and changed.max() <= 32 + C
    assert changed.max() - changed.min() >= 2 * (C - 2)  # and the context is not grossly oversized
    Cd = context_frames(tiny44, "decoder")
    assert 5 <= Cd <= 16


@pytest.mark.parametrize("n", [1, 100, 511, 512, 513])
def test_very_short_inputs(tmp_path, tiny44, n):
    x = np.random.default_rng(n).uniform(-0.3, 0.3, (n, 1)).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    h = codec.encode_file(tiny44, tmp_path / "s.wav", tmp_path / "s.dac")
    assert h.n_frames == -(-n // 512) and h.original_length == n
    codec.decode_file(tiny44, tmp_path / "s.dac", tmp_path / "o.wav")
    assert sf.info(tmp_path / "o.wav").frames == n


def test_silence(tmp_path, tiny44):
    sf.write(tmp_path / "z.wav", np.zeros((30000, 2)), 32000)
    h = codec.encode_file(tiny44, tmp_path / "z.wav", tmp_path / "z.dac")
    assert h.input_loudness == -70.0 and np.isfinite(h.gain_db)
    codec.decode_file(tiny44, tmp_path / "z.dac", tmp_path / "z_out.wav")
    y, sr = sf.read(tmp_path / "z_out.wav")
    assert sr == 32000 and y.shape == (30000, 2) and np.isfinite(y).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_refused(tmp_path, tiny44, bad):
    x = np.zeros((5000, 1), np.float32)
    x[4000] = bad
    sf.write(tmp_path / "n.wav", x, 44100, subtype="FLOAT")
    with pytest.raises(DacliError, match="NaN or infinite"):
        codec.encode_file(tiny44, tmp_path / "n.wav", tmp_path / "n.dac")
    assert not (tmp_path / "n.dac").exists()


def test_file_changing_while_read(tmp_path, tiny44, monkeypatch):
    sf.write(tmp_path / "g.wav", np.zeros((100000, 1)), 44100)
    real = audio.read_blocks
    calls = {"n": 0}

    def growing(path, block=audio.READ_BLOCK):
        calls["n"] += 1
        yield from real(path, block)
        if calls["n"] == 2:  # the second pass sees more audio than the first
            yield np.zeros((70000, 1), np.float32)

    monkeypatch.setattr(audio, "read_blocks", growing)
    with pytest.raises(DacliError, match="changed while it was being read"):
        codec.encode_file(tiny44, tmp_path / "g.wav", tmp_path / "g.dac")
    assert not (tmp_path / "g.dac").exists()


def test_file_shrinking_while_read(tmp_path, tiny44, monkeypatch):
    sf.write(tmp_path / "g.wav", np.zeros((100000, 1)), 44100)
    real = audio.read_blocks
    calls = {"n": 0}

    def shrinking(path, block=audio.READ_BLOCK):
        calls["n"] += 1
        for i, x in enumerate(real(path, 4096)):
            if calls["n"] == 2 and i == 5:
                return
            yield x

    monkeypatch.setattr(audio, "read_blocks", shrinking)
    with pytest.raises(DacliError, match="changed while it was being read"):
        codec.encode_file(tiny44, tmp_path / "g.wav", tmp_path / "g.dac")


def test_decode_streams_wav(tmp_path, tiny44, clip, monkeypatch):
    """To a stream (stdout) the WAV goes out window by window, as the decoder makes them, and holds the
    same bytes as the file decode writes."""
    x = clip[:, :44100 * 5]
    sf.write(tmp_path / "a.wav", x[0], 44100)
    codec.encode_file(tiny44, tmp_path / "a.wav", tmp_path / "a.dac")
    codec.decode_file(tiny44, tmp_path / "a.dac", tmp_path / "a.wav.out", window_seconds=1.0)
    made = []  # windows decoded so far, as seen by each write
    real = windows.decode_windows

    def counted(*a, **k):
        for y in real(*a, **k):
            made.append(1)
            yield y
    monkeypatch.setattr(windows, "decode_windows", counted)

    class Stream:
        def __init__(self):
            self.data, self.seen = bytearray(), []

        def write(self, b):
            self.data += b
            self.seen.append(len(made))

        def flush(self):
            pass
    out = Stream()
    codec.decode_file(tiny44, tmp_path / "a.dac", out, window_seconds=1.0)
    assert bytes(out.data) == (tmp_path / "a.wav.out").read_bytes()
    assert out.seen[0] == 0 and out.seen[1] == 1 and len(made) >= 5  # header first, then each window
    with pytest.raises(ValueError):
        codec.decode_file(tiny44, tmp_path / "a.dac", Stream(), fmt="flac")


def test_wav_header_of_unbounded_length():
    from dacli import audio
    h = audio.wav_header(44100, 2, 1 << 31)  # 8 GiB of samples: more than a RIFF size holds
    assert len(h) == 44 and h[4:8] == h[40:44] == b"\xff\xff\xff\xff"
    assert audio.wav_header(8000, 1, 10)[40:44] == (20).to_bytes(4, "little")


def test_a_file_decodes_to_the_same_samples_whatever_the_push_size(clip):
    """The decode of files and arrays is one push loop: in fp32 its samples do not depend on the push
    size (--window-seconds), short last pushes included, and stay within FP32_ONE_PASS_AUDIO of
    model.decode."""
    import dacli
    model = dacli.load_model(None, "cpu", "fp32")
    codes = model.encode(clip[:, :44100 * 10]).numpy()  # 862 frames: 1 s pushes leave 2 at the end
    assert [b - a for a, b in windows.pushes(862, 86)][-2:] == [72, 16]  # the last gets MIN_PUSH
    one = model.decode(codes).numpy()
    outs = {s: windows.decode_array(model, codes, window_seconds=s) for s in (0.3, 1.0, 2.0, 3.7, 10)}
    for s, y in outs.items():
        assert np.array_equal(y, outs[1.0]), s
    np.testing.assert_allclose(outs[1.0], one, atol=FP32_ONE_PASS_AUDIO, rtol=0)
