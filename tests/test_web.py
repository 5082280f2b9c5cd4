"""The .dac player (web/) in a real browser: Debian's Chromium, headless, driven by Playwright, the page
served from 127.0.0.1 by web/serve.py's handler (cross-origin isolated, as make web-serve serves it:
decoding on threads), started and stopped here. The page's decode equals dacli's at the model rate; it
plays a file while it decodes it; its JavaScript reader gives the Python reader's verdict on every test
vector of the container; refused files show their reason. Needs `make web` (make test runs it)."""

import base64
import http.server
import importlib.util
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import dacli
import test_container
from conftest import FIXTURES
from dacli import codec, container
from dacli.errors import DacliError

pytestmark = pytest.mark.slow  # a system test: a browser

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CHROMIUM = "/usr/bin/chromium"


def _handler():
    spec = importlib.util.spec_from_file_location("serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    return serve.Handler


@pytest.fixture(scope="module")
def page():
    """The player open in headless Chromium, its model loaded → the Playwright page."""
    missing = [p for p in ("vendor/ort.min.mjs", "vendor/fzstd.mjs", "model/dacli-onnx.json") if not (WEB / p).exists()]
    assert not missing, f"the player is not built ({', '.join(missing)} missing): run make web"
    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed: make web-deps"
    from playwright.sync_api import sync_playwright
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_handler(), directory=str(WEB)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
            try:
                pg = browser.new_page(viewport={"width": 1000, "height": 760})
                errors = []
                pg.on("pageerror", lambda e: errors.append(str(e)))
                pg.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                info = pg.evaluate("window.dacli.ready")
                assert info["name"] == dacli.load_model(None, "cpu", "fp32").name, errors
                assert pg.evaluate("crossOriginIsolated") and pg.evaluate("window.dacli.threads") > 1
                yield pg
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def in_page(page, script, data: bytes):
    """Run ``script`` (an async function of a Uint8Array) on ``data`` in the page."""
    return page.evaluate(f"async (b64) => ({script})(Uint8Array.from(atob(b64), c => c.charCodeAt(0)))",
                         base64.b64encode(data).decode())


def python_verdict(data: bytes):
    """What dacli's reader says of these bytes: the header's fields, or the reason it refuses them."""
    try:
        h, _ = container.parse(data, "file")
    except DacliError as e:
        return str(e).removeprefix("file: ")
    return {"model_sample_rate": h.model_sample_rate, "hop_length": h.hop_length,
            "original_sample_rate": h.original_sample_rate, "channels": h.channels, "n_codebooks": h.n_codebooks,
            "bits_per_code": h.bits_per_code, "frames_per_block": h.frames_per_block,
            "original_length": h.original_length, "model_length": h.model_length, "n_frames": h.n_frames,
            "input_loudness": h.input_loudness, "gain_db": h.gain_db, "model_hash": h.model_hash.hex(),
            "model_name": h.model_name, "bandwidth_hz": h.bandwidth_hz}


def vectors(tmp_path):
    """Every test vector of the container: the fixtures, the corrupt and hostile files of
    tests/test_container.py, the block-size cases, extended and revision 1.0 headers → {name: bytes}."""
    out = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.dac"))}
    _, good = test_container._written(tmp_path)
    out["written"] = good
    for i, (mangle, _) in enumerate(test_container.CORRUPT):
        out[f"corrupt-{i}"] = mangle(good)
    h, codes, blocks = test_container._valid(tmp_path)
    for i, (fields, _) in enumerate(test_container.HOSTILE):
        out[f"hostile-{i}"] = test_container._forge(container.replace(h, **fields), blocks)
    ok, bad = test_container.block_cases()
    out["zstd-block"] = ok
    for i, (blob, _) in enumerate(bad):
        out[f"block-{i}"] = blob
    out["extended"] = test_container._forge(h, blocks, extension=bytes(range(256)) * 4)
    body = h.to_bytes()[:-8]
    body = body[:10] + struct.pack("<H", len(body) + 4) + body[12:]
    out["revision-1.0"] = body + struct.pack("<I", zlib.crc32(body)) + blocks
    body = bytearray(container.replace(h, model_name="abc").to_bytes()[:-4])
    body[97:100] = b"\xff\xfe\xfd"
    out["name-not-utf8"] = bytes(body) + struct.pack("<I", zlib.crc32(body)) + blocks
    return out


def test_the_javascript_reader_gives_the_python_readers_verdict(page, tmp_path):
    cases = vectors(tmp_path)
    refused = 0
    for name, data in cases.items():
        want = python_verdict(data)
        got = in_page(page, "async (b) => window.dacli.inspect(b)", data)
        if isinstance(want, dict):
            assert isinstance(got, dict), (name, got)
            for k in ("input_loudness", "gain_db"):  # float32 fields, the same double on both sides
                assert got.pop(k) == want.pop(k), (name, k)
        else:
            refused += 1
        assert got == want, name
    assert refused >= len(test_container.CORRUPT) + len(test_container.HOSTILE)


def test_the_page_decodes_what_dacli_decodes_at_the_model_rate(page, tmp_path):
    """A 48 kHz stereo file with a recorded bandwidth: the page's samples (model rate, gain restored,
    low-passed) within 1e-4 of dacli's fp32 decode before it resamples."""
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    import soxr
    x = x[5 * sr:8 * sr, :1]
    clip = soxr.resample(np.concatenate([x, 0.8 * np.roll(x, sr // 10, axis=0)], axis=1), sr, 48000)  # stereo
    sf.write(tmp_path / "in.wav", clip, 48000)
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", tmp_path / "in.wav", "-o", tmp_path / "x.dac",
                        "--bandwidth", "12000", "-q", "--precision", "fp32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "x.dac").read_bytes()
    header, codes = container.parse(data)
    want = np.concatenate(list(codec.model_rate_audio(dacli.load_model(None, "cpu", "fp32"), header, codes)))
    got = in_page(page, """async (b) => { const r = await window.dacli.decode(b);
                           return {sampleRate: r.sampleRate, channels: r.channels.map((c) => Array.from(c))}; }""",
                  data)
    assert got["sampleRate"] == 44100 and len(got["channels"]) == 2
    y = np.array(got["channels"], np.float32).T
    assert y.shape == want.shape == (header.model_length, 2)
    assert float(np.abs(y - want).max()) <= 1e-4
    assert "Decoded 3.00 s" in page.inner_text("#status") and page.is_enabled("#play")
    if os.environ.get("DACLI_PLAYER_SCREENSHOT"):  # the README's picture: the page after decoding
        page.screenshot(path=os.environ["DACLI_PLAYER_SCREENSHOT"])


def test_the_page_plays_a_file_while_it_decodes_it(page, tmp_path):
    """30 s of stereo at 3 codebooks, opened as a user opens it: audio plays (the AudioContext running past
    the first stretch's start) before half of the file is decoded; every stretch is handed on in order.
    Prints how fast the page decoded it against real time (the README's figure)."""
    x = music(30.0)
    sf.write(tmp_path / "in.wav", x, 44100)
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", tmp_path / "in.wav", "-o", tmp_path / "x.dac",
                        "--n-codebooks", "3", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page.set_input_files("#file", str(tmp_path / "x.dac"))
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Decoded')", timeout=600000)
    log = page.evaluate("window.dacli.playback.log")
    assert all(e["contextState"] == "running" for e in log), log[:3]
    fractions = [e["fraction"] for e in log]
    assert fractions == sorted(fractions) and fractions[-1] == 1 and len(log) > 20
    playing = next(e for e in log if e["playing"])
    assert playing["fraction"] < 0.5, playing
    status = page.inner_text("#status")
    print(f"\n{hardware_line()}; the page: {status} {log[-1]['gaps']} gaps in playback; audio playing at "
          f"{playing['fraction']:.0%} decoded, {playing['ms'] / 1000:.2f} s after opening")


def music(seconds):
    """``seconds`` of music20s.flac (looped) in stereo, (samples, 2) at 44.1 kHz."""
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    import soxr
    x = soxr.resample(x[:, :1], sr, 44100)
    x = np.tile(x, (int(np.ceil(seconds * 44100 / len(x))), 1))[:int(seconds * 44100)]
    return np.concatenate([x, 0.8 * np.roll(x, 4410, axis=0)], axis=1)


def hardware_line():
    from dacli.bench import describe_machine, machine
    return describe_machine(machine())


@pytest.mark.parametrize("make, message", [
    (lambda good, other: good[:-5], "truncated (block 2 is cut short)"),
    (lambda good, other: b"RIFF" + good[4:], "not a .dac file (unknown magic bytes)"),
    (lambda good, other: other, "encoded with model 'tiny44.pth'"),
])
def test_a_refused_file_shows_its_reason_on_the_page(page, tmp_path, make, message):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    sf.write(tmp_path / "in.wav", x[:8 * sr], sr)
    for model, name in ((None, "good.dac"), (FIXTURES / "tiny44.pth", "other.dac")):
        args = ["--model", str(model)] if model else []
        r = subprocess.run([sys.executable, "-m", "dacli", "encode", tmp_path / "in.wav", "-o", tmp_path / name, "-q",
                            *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.dac"
    bad.write_bytes(make((tmp_path / "good.dac").read_bytes(), (tmp_path / "other.dac").read_bytes()))
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error", timeout=60000)
    assert page.inner_text("#status").startswith(f"bad.dac: {message}"), page.inner_text("#status")
    json.dumps(page.evaluate("window.dacli.inspect(new Uint8Array(4))"))  # the API stays usable
