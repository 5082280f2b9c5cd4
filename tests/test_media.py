"""Formats libsndfile cannot read (MP4/M4A with AAC, WebM with Opus, Matroska), decoded through PyAV:
the files are made here with PyAV itself. Their codes equal those of the same samples given as WAV;
a file without an audio track or with an unknown codec is a one-line failure and a batch goes on."""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from dacli import audio, codec, container, media

from conftest import FIXTURES

TINY = str(FIXTURES / "tiny44.pth")


def make(path, fmt, codec_name, rate=44100, channels=2, seconds=3.0, with_audio=True, with_video=False):
    """A real file of ``fmt`` with a 440 Hz tone (and/or a few black video frames), made with PyAV."""
    out = av.open(str(path), "w", format=fmt)
    if with_video:
        v = out.add_stream("mpeg4", rate=10)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        for _ in range(10):
            for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
    if with_audio:
        s = out.add_stream(codec_name, rate=rate)
        s.layout = "stereo" if channels == 2 else "mono"
        n = int(rate * seconds)
        t = np.arange(n) / rate
        x = np.stack([0.3 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]).astype(np.float32)
        step = s.codec_context.frame_size or 1024
        for i in range(0, n, step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + step]), format="fltp",
                                               layout=s.layout.name)
            frame.sample_rate = rate
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    out.close()
    return path


@pytest.mark.parametrize("name, fmt, codec_name, rate, channels", [
    ("a.m4a", "mp4", "aac", 44100, 2), ("a.mp4", "mp4", "aac", 48000, 1),
    ("a.webm", "webm", "libopus", 48000, 2), ("a.mkv", "matroska", "aac", 22050, 1)])
def test_other_containers_encode_like_the_same_samples_as_wav(tmp_path, tiny44, name, fmt, codec_name, rate, channels):
    src = make(tmp_path / name, fmt, codec_name, rate, channels)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(src))  # libsndfile really cannot read it
    assert max(len(b) for b in media.read_blocks(src)) <= 8192  # decoded frame by frame: bounded memory
    blocks = list(audio.read_blocks(src))
    assert {len(b) for b in blocks[:-1]} <= {audio.READ_BLOCK}  # regrouped as libsndfile's reads come
    x = np.concatenate(blocks)
    assert x.shape[1] == channels and abs(len(x) - 3 * rate) < 0.1 * rate
    sf.write(tmp_path / "same.wav", x, rate, subtype="FLOAT")
    h1 = codec.encode_file(tiny44, src, tmp_path / "a.dac")
    h2 = codec.encode_file(tiny44, tmp_path / "same.wav", tmp_path / "b.dac")
    assert h1 == h2 and np.array_equal(container.read(tmp_path / "a.dac")[1], container.read(tmp_path / "b.dac")[1])
    assert (h1.original_sample_rate, h1.channels, h1.original_length) == (rate, channels, len(x))
    codec.decode_file(tiny44, tmp_path / "a.dac", tmp_path / "back.wav")
    assert sf.info(tmp_path / "back.wav").frames == len(x) and sf.info(tmp_path / "back.wav").samplerate == rate
    assert audio.read(src)[0].shape == x.shape and media.info(src).samplerate == rate


def test_no_audio_track_and_unknown_codecs_fail_in_one_line_and_the_batch_goes_on(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    make(d / "video_only.mp4", "mp4", None, with_audio=False, with_video=True)
    webm = make(tmp_path / "x.webm", "webm", "libopus", 48000)
    (d / "strange.webm").write_bytes(webm.read_bytes().replace(b"A_OPUS", b"A_QQQQ"))  # a codec nobody knows
    (d / "garbage.m4a").write_bytes(b"not an mp4 at all" * 100)
    make(d / "good.m4a", "mp4", "aac")
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(d), "-o", str(tmp_path / "out"), "--model", TINY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("dacli: error:")]
    assert sorted(lines) == sorted([
        f"dacli: error: {d / 'garbage.m4a'}: cannot read audio (Invalid data found when processing input)",
        f"dacli: error: {d / 'strange.webm'}: the audio track's codec is unknown or unsupported",
        f"dacli: error: {d / 'video_only.mp4'}: no audio track"]), r.stderr
    assert "encoded 1 file(s), skipped 0, failed 3" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dac")) == ["good.dac"]
    reports = list((tmp_path / "out").glob("dacli-report-*.tsv"))  # the run's report: one row per input
    assert len(reports) == 1 and len(list((tmp_path / "out").iterdir())) == 2
    rows = [ln.split("\t") for ln in reports[0].read_text().splitlines()[2:]]
    assert sorted((Path(r[0]).name, r[2]) for r in rows) == [("garbage.m4a", "failed"), ("good.m4a", "ok"),
                                                             ("strange.webm", "failed"), ("video_only.mp4", "failed")]
    assert [r[3] for r in rows if r[2] == "failed"] == [ln[len("dacli: error: "):] for ln in sorted(lines)]


def test_libsndfile_reasons_are_kept_for_what_ffmpeg_cannot_open_either(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF nonsense" * 10)
    with pytest.raises(Exception, match="cannot read audio.*Format not recognised"):
        audio.info(tmp_path / "x.wav")
