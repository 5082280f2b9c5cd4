"""The command line, through click's runner and once through a real subprocess."""

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from dacli import audio, codec, container, registry, windows
from dacli.cli import cli

from conftest import FIXTURES

TINY = str(FIXTURES / "tiny44.pth")


def run(*args, ok=True):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def tone(path, rate=44100, seconds=1.0, channels=1, subtype="PCM_16", amp=0.3):
    t = np.arange(int(rate * seconds)) / rate
    x = np.stack([amp / (c + 1) * np.sin(2 * np.pi * (220 * (c + 1)) * t) for c in range(channels)], 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return x


def test_encode_decode_info_single_file(tmp_path):
    tone(tmp_path / "a.wav", rate=48000, seconds=1.3, channels=2, subtype="PCM_24")
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--kbps", 12, "--model", TINY, "-q")  # stereo total
    h = container.read_header(tmp_path / "a.dac")
    assert (h.n_codebooks, h.channels, h.original_sample_rate, h.original_length) == (6, 2, 48000, 62400)
    assert h.model_name == "tiny44.pth"
    run("decode", tmp_path / "a.dac", "-o", tmp_path / "b.flac", "--model", TINY, "-q")
    i = sf.info(tmp_path / "b.flac")
    assert (i.samplerate, i.channels, i.frames, i.format) == (48000, 2, 62400, "FLAC")
    res = run("info", tmp_path / "a.dac", "--json")
    import json
    d = json.loads(res.output)
    assert d["n_codebooks"] == 6 and d["channels"] == 2 and d["duration_s"] == 1.3
    assert d["kbps"] == pytest.approx(2 * 6 * 44100 / 512 * 10 / 1000, abs=1e-3)
    assert d["kbps_per_channel"] == pytest.approx(6 * 44100 / 512 * 10 / 1000, abs=1e-3)
    assert d["file_bytes"] == (tmp_path / "a.dac").stat().st_size
    assert "compression_ratio_vs_pcm16" in d
    assert "frame_rate_hz" in run("info", tmp_path / "a.dac").output


def test_default_output_beside_input(tmp_path):
    tone(tmp_path / "a.flac", seconds=0.5)
    run("encode", tmp_path / "a.flac", "--model", TINY, "-q")
    assert (tmp_path / "a.dac").exists()
    run("decode", tmp_path / "a.dac", "--model", TINY, "-q")
    assert sf.info(tmp_path / "a.wav").frames == 22050


def test_bandwidth_option(tmp_path):
    """--bandwidth: measured by default (a tone over 16-bit noise is not band-limited: its noise fills
    the spectrum), none with full, given in Hz; shown by info; a bad value is one line and exit 1."""
    import json
    tone(tmp_path / "a.wav")
    for value, want in (("auto", "full"), ("full", "full"), ("9000", 9000)):
        run("encode", tmp_path / "a.wav", "-o", tmp_path / f"{value}.dac", "--bandwidth", value, "--model", TINY, "-q")
        got = json.loads(run("info", tmp_path / f"{value}.dac", "--json").output)["bandwidth_hz"]
        assert got == want
    res = run("encode", tmp_path / "a.wav", "-o", tmp_path / "x.dac", "--bandwidth", "30000", "--model", TINY,
              "-q", ok=False)
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "dacli: error: bandwidth '30000': give auto, full, or a whole number of Hz from 1 to 21050 "
        "(the model codes at 44100 Hz)"]
    assert not (tmp_path / "x.dac").exists()


def test_n_codebooks_and_kbps_choices(tmp_path):
    tone(tmp_path / "a.wav", seconds=0.3)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--n-codebooks", 2, "--model", TINY, "-q")
    assert container.read_header(tmp_path / "a.dac").n_codebooks == 2
    res = run("encode", tmp_path / "a.wav", "-o", tmp_path / "b.dac", "--kbps", 7.75, "--model", TINY)
    assert "8 of 9 codebooks = 6.891 kbps" in res.output
    res = run("encode", tmp_path / "a.wav", "-o", tmp_path / "c.dac", "--kbps", 4, "--n-codebooks", 2,
              "--model", TINY, ok=False)
    assert res.exit_code == 2 and "not both" in res.output


def test_folder_batch_mirror_skip_overwrite_and_bad_file(tmp_path):
    src = tmp_path / "in"
    tone(src / "x.wav", seconds=0.4)
    tone(src / "sub" / "y.FLAC", rate=22050, seconds=0.4)
    tone(src / "sub" / "deep" / "z.Wav", rate=16000, seconds=0.2, channels=3)
    (src / "notes.txt").write_text("not audio")
    (src / "broken.wav").write_bytes(b"RIFF nonsense")
    res = run("encode", src, "-o", tmp_path / "out", "--model", TINY, ok=False)
    assert res.exit_code == 1
    assert "broken.wav" in res.output and "encoded 3 file(s), skipped 0, failed 1" in res.output
    assert "Traceback" not in res.output
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.dac"))
    assert made == ["sub/deep/z.dac", "sub/y.dac", "x.dac"]
    assert not list((tmp_path / "out").rglob("*.part"))
    # existing outputs are skipped unless --overwrite
    before = (tmp_path / "out" / "x.dac").stat().st_mtime_ns
    (src / "broken.wav").unlink()
    res = run("encode", src, "-o", tmp_path / "out", "--model", TINY)
    assert "skipped 3" in res.output
    assert (tmp_path / "out" / "x.dac").stat().st_mtime_ns == before
    res = run("encode", src, "-o", tmp_path / "out", "--model", TINY, "--overwrite")
    assert "encoded 3 file(s)" in res.output
    run("decode", tmp_path / "out", "-o", tmp_path / "dec", "--model", TINY, "-q")
    i = sf.info(tmp_path / "dec" / "sub" / "deep" / "z.wav")
    assert (i.samplerate, i.channels, i.frames) == (16000, 3, 3200)


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_bug_stops_a_batch_with_its_traceback(tmp_path, monkeypatch, command):
    """A programming error inside dacli (here a TypeError on the second file) is not a bad input: the
    run stops with it instead of reporting the file as failed and going on."""
    for name in ("a", "b", "c"):
        tone(tmp_path / "in" / f"{name}.wav", seconds=0.3)
    if command == "decode":
        run("encode", tmp_path / "in", "-o", tmp_path / "in", "--model", TINY, "-q")
    real, calls = (codec.plan_file if command == "encode" else codec.decode_file), []

    def second_breaks(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise TypeError("a bug in dacli")
        return real(*a, **k)
    monkeypatch.setattr(codec, "plan_file" if command == "encode" else "decode_file", second_breaks)
    res = run(command, tmp_path / "in", "-o", tmp_path / "out", "--model", TINY, ok=False)
    assert isinstance(res.exception, TypeError) and "a bug in dacli" in str(res.exception)
    assert "failed 1" not in res.output and len(calls) == 2  # stopped at the second file


def test_shards_partition_the_files(tmp_path):
    for i in range(12):
        tone(tmp_path / "in" / f"f{i:02d}.wav", seconds=0.05)
    seen = []
    for k in (1, 2, 3):
        out = tmp_path / f"out{k}"
        run("encode", tmp_path / "in", "-o", out, "--shard", f"{k}/3", "--model", TINY, "-q")
        seen.append(sorted(p.name for p in out.rglob("*.dac")) if out.exists() else [])
    flat = [n for s in seen for n in s]
    assert sorted(flat) == [f"f{i:02d}.dac" for i in range(12)] and len(set(flat)) == 12
    assert all(seen), "every shard should get some of 12 files"
    res = run("encode", tmp_path / "in", "-o", tmp_path / "x", "--shard", "4/3", "--model", TINY, ok=False)
    assert res.exit_code == 1 and "--shard must be K/N" in res.output


def test_transcode_lower_bitrate(tmp_path):
    tone(tmp_path / "a.wav", seconds=1.0)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--model", TINY, "-q")
    run("transcode", tmp_path / "a.dac", "-o", tmp_path / "b.dac", "--kbps", 4)
    h, c = container.read(tmp_path / "b.dac")
    h0, c0 = container.read(tmp_path / "a.dac")
    assert h.n_codebooks == 4  # 4 × 0.861 = 3.45 kbps ≤ 4 < 5 × 0.861
    np.testing.assert_array_equal(c, c0[:, :4])
    # identical to encoding at that bitrate directly
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "c.dac", "--n-codebooks", 4, "--model", TINY, "-q")
    assert (tmp_path / "c.dac").read_bytes() == (tmp_path / "b.dac").read_bytes()


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b[:200] + bytes([b[200] ^ 4]) + b[201:], "CRC mismatch"),
    (lambda b: b[:8] + b"\x09\x00" + b[10:], "version 9 is not supported"),
    (lambda b: b"OggS" + b[4:], "not a .dac file"),
])
def test_decode_refuses_bad_dac_with_one_line(tmp_path, mangle, message):
    tone(tmp_path / "a.wav", seconds=2.0)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--model", TINY, "-q")
    p = tmp_path / "a.dac"
    p.write_bytes(mangle(p.read_bytes()))
    res = run("decode", p, "-o", tmp_path / "a.wav2.wav", "--model", TINY, ok=False)
    assert res.exit_code == 1 and message in res.output, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (ValueError, RuntimeError))
    assert not (tmp_path / "a.wav2.wav").exists()


def test_decode_with_another_model_is_refused(tmp_path):
    tone(tmp_path / "a.wav", seconds=0.5)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--model", TINY, "-q")
    ck = torch.load(TINY, weights_only=True)
    ck["state_dict"]["decoder.model.0.bias"] += 0.01
    other = tmp_path / "other.pth"
    torch.save(ck, other)
    res = run("decode", tmp_path / "a.dac", "-o", tmp_path / "x.wav", "--model", other, ok=False)
    assert res.exit_code == 1 and "encoded with model 'tiny44.pth'" in res.output
    res = run("decode", tmp_path / "a.dac", "-o", tmp_path / "x.wav", ok=False)
    assert res.exit_code == 1 and "pass --model" in res.output


@pytest.mark.parametrize("args, message", [
    (["encode", "missing.wav", "--model", TINY], "no such file or folder"),
    (["encode", "{tmp}/empty.wav", "--model", TINY], "holds no audio"),
    (["encode", "{tmp}/nan.wav", "--model", TINY], "NaN or infinite"),
    (["encode", "{tmp}/a.wav", "--model", "{tmp}/nope.pth"], "no such checkpoint"),
    (["encode", "{tmp}/a.wav", "--model", "nonsense-model"], "unknown model"),
    (["decode", "{tmp}/nothing.dac"], "no such file"),
    (["info", "{tmp}/a.wav"], "not a .dac file"),
    (["decode", FIXTURES / "tiny44_mono_short.dac", "-o", "{tmp}/l.wav"], "records no model; pass --model"),
])
def test_user_mistakes_give_one_line(tmp_path, args, message):
    tone(tmp_path / "a.wav", seconds=0.2)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 44100)
    sf.write(tmp_path / "nan.wav", np.full((100, 1), np.nan), 44100, subtype="FLOAT")
    res = run(*[str(a).replace("{tmp}", str(tmp_path)) for a in args], ok=False)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if "error" in ln]
    assert len(lines) == 1 and message in lines[0], res.output
    assert "Traceback" not in res.output


def test_legacy_decode_through_cli(tmp_path):
    # fp32: the official decoder's output to the last 16-bit step (auto may pick mixed on this CPU)
    run("decode", FIXTURES / "tiny44_stereo.dac", "-o", tmp_path / "s.wav", "--model", TINY, "-q",
        "--precision", "fp32")
    y, sr = sf.read(tmp_path / "s.wav", dtype="float32")
    ref = np.load(FIXTURES / "tiny44_stereo_decompressed.npy")
    assert sr == 44100 and y.T.shape == ref.shape
    np.testing.assert_allclose(y.T, np.clip(ref, -1, 1), atol=1.0 / 32768 + 1e-6)
    assert "legacy" in run("info", FIXTURES / "tiny44_stereo.dac").output


def test_interrupted_decode_leaves_nothing(tmp_path, monkeypatch, tiny44):
    tone(tmp_path / "a.wav", seconds=3.0)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--model", TINY, "-q")
    from dacli.runtime.stepping import Steps
    calls = {"n": 0}
    real = Steps.push

    def flaky(self, inputs, last=()):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, inputs, last)

    monkeypatch.setattr(Steps, "push", flaky)
    res = run("decode", tmp_path / "a.dac", "-o", tmp_path / "out.wav", "--model", TINY, "--chunk-seconds", 1,
              "-q", ok=False)
    assert res.exit_code == 130 and "interrupted" in res.output
    assert calls["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dac", "a.wav"]


def test_models_and_download_from_local_server(tmp_path, monkeypatch):
    """`dacli download` against an HTTP server on 127.0.0.1 serving the official URL layout."""
    monkeypatch.setenv("DACLI_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "srv"
    (root / "0.0.4").mkdir(parents=True)
    (root / "0.0.4" / "weights_24khz.pth").write_bytes((FIXTURES / "tiny24.pth").read_bytes())
    (root / "0.0.5").mkdir()
    (root / "0.0.5" / "weights_16khz.pth").write_bytes(b"<html>not found</html>")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert "not downloaded: dacli download 24khz" in run("models").output
        res = run("download", "24khz", "--base-url", base, "-q")
        dest = tmp_path / "cache" / "weights_24khz_8kbps_0.0.4.pth"
        assert res.stdout.strip() == str(dest) and dest.read_bytes() == (FIXTURES / "tiny24.pth").read_bytes()
        assert str(dest) in run("models").output
        assert registry.load_model("24khz", "cpu").sample_rate == 24000
        res = run("download", "16khz", "--base-url", base, "-q", ok=False)  # not a checkpoint
        assert res.exit_code == 1 and "not a readable torch checkpoint" in res.output
        res = run("download", "44khz-16kbps", "--base-url", base, "-q", ok=False)  # 404
        assert res.exit_code == 1 and "HTTP Error 404" in res.output
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["weights_24khz_8kbps_0.0.4.pth"]
    finally:
        srv.shutdown()
    assert registry.official_url("44khz-8kbps") == \
        "https://github.com/descriptinc/descript-audio-codec/releases/download/0.0.1/weights.pth"


@pytest.mark.slow  # a system test: make test-quick leaves it out
def test_real_subprocess(tmp_path):
    tone(tmp_path / "a.wav", seconds=0.5)
    exe = Path(sys.executable).parent / "dacli"
    r = subprocess.run([str(exe), "encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.dac"), "--model", TINY],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), "info", str(tmp_path / "a.dac"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and '"n_codebooks": 9' in r.stdout
    r = subprocess.run([str(exe), "decode", str(tmp_path / "missing.dac")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().startswith("dacli: error:") and "Traceback" not in r.stderr
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "encode" in r.stdout


def test_loudness_restored_for_whole_signal(tmp_path, tiny44):
    """One gain for all channels (normalise to -16 LUFS, peak-limited), undone exactly on decode."""
    x = tone(tmp_path / "s.wav", seconds=2.0, channels=2, amp=0.05)  # channel 2 is 6 dB quieter
    h = codec.encode_file(tiny44, tmp_path / "s.wav", tmp_path / "s.dac")
    assert h.input_loudness == pytest.approx(audio.loudness(x, 44100), abs=0.05)
    assert h.gain_db == pytest.approx(-16 - h.input_loudness, abs=1e-4)
    hdr, codes = container.read(tmp_path / "s.dac")
    y = windows.decode_array(tiny44, codes)[:, :hdr.model_length] * audio.db_to_gain(-hdr.gain_db)
    codec.decode_file(tiny44, tmp_path / "s.dac", tmp_path / "d.wav")
    d, _ = sf.read(tmp_path / "d.wav", dtype="float32")
    np.testing.assert_allclose(d.T, np.clip(y, -1, 1), atol=1.5 / 32768)


def test_peak_limit(tmp_path, tiny44):
    x = np.zeros((44100, 1), np.float32)
    x[1000:1100] = 0.9  # a click: very quiet integrated loudness, high peak
    sf.write(tmp_path / "c.wav", x, 44100, subtype="FLOAT")
    h = codec.encode_file(tiny44, tmp_path / "c.wav", tmp_path / "c.dac")
    assert -16 - h.input_loudness > h.gain_db
    assert 0.9 * audio.db_to_gain(h.gain_db) == pytest.approx(1.0, abs=2e-2)  # soxr overshoot aside


def test_read_codes_needs_no_model_and_no_torch(tmp_path):
    tone(tmp_path / "a.wav", seconds=2.0, channels=2)
    run("encode", tmp_path / "a.wav", "--model", TINY, "--n-codebooks", "5")
    h0, c0 = container.read(tmp_path / "a.dac")
    code = ("import sys, dacli; codes, h = dacli.read_codes(sys.argv[1]); "
            "print(codes.dtype, codes.shape, h.n_codebooks, h.channels, int(codes.sum()), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.dac")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["int32", "(2,", "5,", f"{h0.n_frames})", "5", "2", str(int(c0.sum())), "False"]


@pytest.mark.slow  # a system test: make test-quick leaves it out
def test_logs_have_no_cursor_escapes(tmp_path):
    """stderr to a file or pipe: plain progress lines, never the terminal's cursor movements."""
    tone(tmp_path / "in" / "long.wav", seconds=25.0)
    tone(tmp_path / "in" / "short.wav")
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                        "--model", TINY], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr, repr(r.stderr)
    assert "encoded 2 file(s)" in r.stderr
    q = subprocess.run([sys.executable, "-m", "dacli", "encode", str(tmp_path / "in"), "-o", str(tmp_path / "q"),
                        "--model", TINY, "-q"], capture_output=True, text=True, timeout=300)
    assert q.returncode == 0 and q.stderr == ""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["models"], ["info", "{dac}"],
                                  ["transcode", "{dac}", "-o", "{out}", "--kbps", "3"], ["encode", "--help"]])
def test_light_commands_import_neither_torch_nor_scipy(tmp_path, args):
    """Start-up time: these commands must not pay for torch (1.6 s) or scipy.signal (1.0 s).
    benchmarks/startup.py times them."""
    tone(tmp_path / "a.wav")
    run("encode", tmp_path / "a.wav", "--model", TINY)
    args = [a.format(dac=tmp_path / "a.dac", out=tmp_path / "b.dac") for a in args]
    code = ("import sys, runpy\nsys.argv = ['dacli'] + sys.argv[1:]\ntry:\n"
            "    runpy.run_module('dacli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, sorted(m for m in ('torch', 'scipy') if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.stderr.strip().splitlines()[-1] in ("0 []", "None []"), r.stderr


def _sh(cmd, tmp_path, **kw):
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), D=f"{sys.executable} -m dacli", M=f"--model {TINY}")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                          timeout=300, **kw)


@pytest.mark.slow  # a system test: make test-quick leaves it out
def test_pipes(tmp_path):
    """'-' for stdin and stdout in encode, decode and transcode; the same bytes as with files; nothing
    left in the temporary folder."""
    tone(tmp_path / "a.wav", seconds=3.0, channels=2)
    for cmd in ["$D encode a.wav -o f.dac $M -q", "cat a.wav | $D encode - -o in.dac $M -q",
                "$D encode a.wav -o - $M -q > out.dac", "cat f.dac | $D decode - -o - $M -q > piped.wav",
                "$D decode f.dac -o f.wav $M -q", "$D decode f.dac -o - --format flac $M -q > piped.flac",
                "cat f.dac | $D transcode - -o - --kbps 2 > low.dac", "$D transcode f.dac -o flow.dac --kbps 2"]:
        r = _sh(cmd, tmp_path)
        assert r.returncode == 0, (cmd, r.stderr)
    assert (tmp_path / "in.dac").read_bytes() == (tmp_path / "f.dac").read_bytes() == (tmp_path / "out.dac").read_bytes()
    assert (tmp_path / "piped.wav").read_bytes() == (tmp_path / "f.wav").read_bytes()
    assert (tmp_path / "low.dac").read_bytes() == (tmp_path / "flow.dac").read_bytes()
    y, sr = sf.read(tmp_path / "piped.flac")
    assert sr == 44100 and y.shape == (3 * 44100, 2)
    assert [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("dacli")] == []


@pytest.mark.slow  # a system test: make test-quick leaves it out
def test_pipe_faults(tmp_path):
    tone(tmp_path / "a.wav", seconds=30.0)
    assert _sh("$D encode a.wav $M -q", tmp_path).returncode == 0
    r = _sh("$D decode a.dac -o - $M -q | head -c 100 > /dev/null", tmp_path)
    assert r.returncode == 141 and r.stderr == b"", r.stderr  # quiet, as if killed by SIGPIPE
    for cmd, needle in [("$D encode - -o x.dac $M < /dev/null", b"no data on stdin"),
                        ("$D decode - -o x.wav $M < /dev/null", b"no data on stdin"),
                        ("echo garbage | $D decode - -o x.wav $M", b"not a .dac file"),
                        ("$D decode a.dac -o x.wav --format flac $M", b"contradicts the output name"),
                        ("cat a.wav | $D encode - $M", b"needs -o"),
                        ("$D encode a.wav a.wav -o - $M", b"one input file")]:
        r = _sh(cmd, tmp_path)
        assert r.returncode != 0 and needle in r.stderr and b"Traceback" not in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "x.dac").exists() and not (tmp_path / "x.wav").exists()
    assert [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("dacli")] == []
    import pty
    master, slave = pty.openpty()  # stdin a terminal: say so instead of waiting
    try:
        r = subprocess.run([sys.executable, "-m", "dacli", "encode", "-", "-o", "x.dac", "--model", TINY],
                           stdin=slave, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "stdin is a terminal" in r.stderr


def test_ray_options_need_the_ray_engine(tmp_path):
    from click.testing import CliRunner
    from dacli.cli import cli
    for extra in (["--workers", "2"], ["--address", "127.0.0.1:6379"], ["--gpus-per-worker", "1"]):
        r = CliRunner().invoke(cli, ["encode", str(tmp_path), "-o", str(tmp_path / "out"), *extra])
        assert r.exit_code == 2 and "go with --engine ray" in r.output, r.output
    r = CliRunner().invoke(cli, ["encode", str(tmp_path), "-o", str(tmp_path / "x.dac"), "--engine", "ray"])
    assert r.exit_code == 2 and "give -o FOLDER" in r.output, r.output


def test_kbps_is_the_total_over_all_channels(tmp_path):
    """--kbps is what Opus or MP3 mean by a rate: the whole file's, over all its channels (0.861 kbps per
    codebook and channel at 44.1 kHz)."""
    tone(tmp_path / "in" / "s.wav", seconds=0.5, channels=2)
    tone(tmp_path / "in" / "m.wav", seconds=0.5)
    res = run("encode", tmp_path / "in" / "s.wav", "-o", tmp_path / "s.dac", "--kbps", 8, "--model", TINY)
    assert "4 of 9 codebooks = 6.891 kbps for stereo (3.445 kbps per channel)" in res.output
    d = __import__("json").loads(run("info", tmp_path / "s.dac", "--json").output)
    assert (d["n_codebooks"], d["kbps"], d["kbps_per_channel"]) == (4, 6.891, 3.445)
    run("encode", tmp_path / "in", "-o", tmp_path / "both", "--kbps", 8, "--model", TINY, "-q")
    assert [container.read_header(tmp_path / "both" / f).n_codebooks for f in ("m.dac", "s.dac")] == [9, 4]
    # below one codebook per channel: a usage error naming the lowest rate; above the highest: a notice
    res = run("encode", tmp_path / "in" / "s.wav", "-o", tmp_path / "low.dac", "--kbps", 1.5, "--model", TINY, ok=False)
    assert res.exit_code == 2 and "--kbps 1.5 is below the lowest rate for stereo, 1.723 kbps" in res.output
    assert not (tmp_path / "low.dac").exists()
    res = run("encode", tmp_path / "in" / "s.wav", "-o", tmp_path / "hi.dac", "--kbps", 20, "--model", TINY)
    assert "--kbps 20 is above the model's highest rate for stereo: using 15.504 kbps (9 codebooks)" in res.output
    assert container.read_header(tmp_path / "hi.dac").n_codebooks == 9
    # in a folder, a file whose channels the rate cannot carry fails alone, the others go on
    res = run("encode", tmp_path / "in", "-o", tmp_path / "one", "--kbps", 1, "--model", TINY, ok=False)
    assert res.exit_code == 1 and "s.wav: --kbps 1 is below the lowest rate for stereo, 1.723 kbps" in res.output
    assert [p.name for p in (tmp_path / "one").glob("*.dac")] == ["m.dac"]
    res = run("encode", tmp_path / "in" / "m.wav", "-o", tmp_path / "none.dac", "--kbps", 0.5, "--model", TINY, ok=False)
    assert res.exit_code == 2 and "below the lowest rate for mono, 0.861 kbps" in res.output
    # the raw-codes pipe counts the same way
    x = (0.3 * np.sin(np.arange(5000 * 2) / 5)).astype(np.float32).reshape(-1, 2)  # 10 frames
    pcm = (x * 32767).astype("<i2").tobytes()
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", "-", "-o", "-", "--raw-codes", "--channels", "2",
                        "--kbps", "8", "--model", TINY], input=pcm, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 10 * 2 * 4 * 2  # frames × channels × codebooks × 2 bytes


def test_a_rerun_with_other_settings_fails_alone_and_keeps_the_file(tmp_path):
    tone(tmp_path / "in" / "a.wav", seconds=0.4)
    tone(tmp_path / "in" / "b.wav", seconds=0.3)
    run("encode", tmp_path / "in", "-o", tmp_path / "out", "--kbps", 8, "--model", TINY, "-q")
    before = {f: (tmp_path / "out" / f).read_bytes() for f in ("a.dac", "b.dac")}
    tone(tmp_path / "in" / "c.wav", seconds=0.3)
    res = run("encode", tmp_path / "in", "-o", tmp_path / "out", "--kbps", 3, "--model", TINY, ok=False)
    assert res.exit_code == 1
    assert f"{tmp_path / 'out' / 'a.dac'} exists with 9 codebooks, asked 3: --overwrite to replace" in res.output
    assert "encoded 1 file(s), skipped 0, failed 2" in res.output
    assert {f: (tmp_path / "out" / f).read_bytes() for f in ("a.dac", "b.dac")} == before
    assert container.read_header(tmp_path / "out" / "c.dac").n_codebooks == 3
    newest = sorted((tmp_path / "out").glob("dacli-report-*.tsv"))[-1].read_text().splitlines()[2:]
    rows = {Path(r[0]).name: (r[2], r[3]) for r in (ln.split("\t") for ln in newest)}
    assert rows["a.wav"][0] == "failed" and "exists with 9 codebooks, asked 3" in rows["a.wav"][1]
    # the same settings skip; another model fails; --overwrite replaces
    res = run("encode", tmp_path / "in" / "c.wav", "-o", tmp_path / "out" / "c.dac", "--kbps", 3, "--model", TINY)
    assert "skip" in res.output
    res = run("encode", tmp_path / "in" / "a.wav", "-o", tmp_path / "out" / "a.dac", "--model",
              str(FIXTURES / "tiny24.pth"), ok=False)
    assert res.exit_code == 1 and "exists, made with model 'tiny44.pth'" in res.output
    run("encode", tmp_path / "in", "-o", tmp_path / "out", "--kbps", 3, "--model", TINY, "-q", "--overwrite")
    assert container.read_header(tmp_path / "out" / "a.dac").n_codebooks == 3
    # transcode: an existing output of another codebook count fails alone too
    run("transcode", tmp_path / "out" / "a.dac", "-o", tmp_path / "t.dac", "--n-codebooks", 2)
    res = run("transcode", tmp_path / "out" / "a.dac", "-o", tmp_path / "t.dac", "--n-codebooks", 1, ok=False)
    assert res.exit_code == 1 and "t.dac exists with 2 codebooks, asked 1: --overwrite to replace" in res.output


def test_transcoding_up_is_an_error_naming_both_counts(tmp_path):
    tone(tmp_path / "a.wav", seconds=0.4)
    run("encode", tmp_path / "a.wav", "-o", tmp_path / "a.dac", "--n-codebooks", 3, "--model", TINY, "-q")
    res = run("transcode", tmp_path / "a.dac", "-o", tmp_path / "up.dac", "--kbps", 8, ok=False)
    assert res.exit_code == 1 and "--kbps 8 asks for 9 codebooks, the file has 3 (2.584 kbps)" in res.output
    res = run("transcode", tmp_path / "a.dac", "-o", tmp_path / "up.dac", "--n-codebooks", 5, ok=False)
    assert res.exit_code == 1 and "5 codebooks asked, the file has 3" in res.output
    assert not (tmp_path / "up.dac").exists()
    run("transcode", tmp_path / "a.dac", "-o", tmp_path / "same.dac", "--kbps", 3)  # 3 codebooks fit: a copy
    assert (tmp_path / "same.dac").read_bytes() == (tmp_path / "a.dac").read_bytes()


def test_inputs_are_checked_before_a_model_loads(tmp_path):
    """An empty or missing input is one line naming it; no model is loaded for it (a model that does
    not exist is never reached)."""
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "empty.dac").write_bytes(b"")
    for cmd, src in (("encode", "empty.wav"), ("decode", "empty.dac")):
        res = run(cmd, tmp_path / src, "-o", tmp_path / "x", "--model", tmp_path / "nothing.pth", ok=False)
        assert res.exit_code == 1 and f"{tmp_path / src}: empty file" in res.output, res.output
        assert "nothing.pth" not in res.output


def test_progress_counts_the_file_just_finished(monkeypatch, tmp_path):
    """The files bar's hours of audio include the file that just finished when its count goes up."""
    from dacli import batch
    from dacli.outcome import Outcome
    seen = []

    class Bar(batch.PlainProgress):
        def update(self, n=1):
            seen.append(self.desc)

    monkeypatch.setattr(batch, "progress", lambda **kw: Bar(**kw))
    pairs = []
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"x")
        pairs.append((tmp_path / name, tmp_path / f"{name}.out"))
    header = type("H", (), {"duration": 1800.0})
    batch.run(pairs, False, False, lambda s, d, r: [Outcome.done(s, d, header)], "done")
    assert seen[:2] == ["a (0.50 h of audio done)", "b (1.00 h of audio done)"]
    line = batch.PlainProgress(total=10, desc="x", first=0.0)  # in a log, the first line comes at once
    line.update(1)
    assert line.every == line.then


def test_a_dataset_row_shows_progress_over_its_audio(monkeypatch, tmp_path):
    from dacli import batch
    tone(tmp_path / "in" / "long.wav", seconds=21.0)
    run("encode", tmp_path / "in", "-o", tmp_path / "tok", "--format", "parquet", "--model", TINY, "-q")
    totals = []
    real = batch.Reporter.audio_bar
    monkeypatch.setattr(batch.Reporter, "audio_bar", lambda self, name, total: (totals.append(total), real(self, name, total))[1])
    run("decode", tmp_path / "tok", "-o", tmp_path / "wav", "--model", TINY, "-q")
    assert totals == [pytest.approx(21.0)]
