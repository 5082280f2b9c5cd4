"""The .dac container: bit packing, round trips, corruption, size, legacy files."""

import io
import json
import pickle
import struct

import numpy as np
import pytest
import soundfile as sf

from dacli import codec, container
from dacli.errors import DacliError

from conftest import FIXTURES

LEGACY = json.loads((FIXTURES / "MANIFEST.json").read_text())["files"] if (FIXTURES / "MANIFEST.json").exists() else None


def header(**kw):
    base = dict(model_sample_rate=44100, hop_length=512, original_sample_rate=48000, channels=2, n_codebooks=9,
                bits_per_code=10, original_length=100000, model_length=91875, n_frames=180, input_loudness=-20.5,
                gain_db=4.5, model_hash=bytes(range(32)), model_name="tiny44.pth", frames_per_block=64)
    base.update(kw)
    return container.Header(**base)


@pytest.mark.parametrize("bits", [1, 7, 10, 11, 16])
def test_pack_roundtrip(bits):
    v = np.random.default_rng(bits).integers(0, 2 ** bits, 1001)
    buf = container.pack(v, bits)
    assert len(buf) == -(-1001 * bits // 8)
    np.testing.assert_array_equal(container.unpack(buf, 1001, bits), v)


def test_pack_is_msb_first():
    assert container.pack([1, 1023], 10) == bytes([0b00000000, 0b01111111, 0b11110000])


def test_roundtrip_and_header(tmp_path):
    h = header()
    codes = np.random.default_rng(0).integers(0, 1024, (2, 9, 180))
    p = tmp_path / "x.dac"
    container.write(p, h, codes)
    h2, c2 = container.read(p)
    assert h2 == h
    np.testing.assert_array_equal(c2, codes)
    raw = p.read_bytes()
    assert raw[:8] == b"\x89DAC\r\n\x1a\n" and struct.unpack_from("<H", raw, 8)[0] == 1
    assert container.read_header(p) == h


def test_codebook_major_prefix(tmp_path):
    """Dropping the last codebooks = a prefix of each block's bit stream."""
    h = header(frames_per_block=1000, n_frames=50)
    codes = np.random.default_rng(1).integers(0, 1024, (2, 9, 50))
    full = container.pack(codes.transpose(1, 0, 2).reshape(-1), 10)
    low = container.pack(codes[:, :4].transpose(1, 0, 2).reshape(-1), 10)
    assert full[:len(low) - 1] == low[:-1]  # the last byte of the prefix is padded
    h4, c4 = container.truncate_codebooks(h, codes, 4)
    p = tmp_path / "low.dac"
    container.write(p, h4, c4)
    h5, c5 = container.read(p)
    assert h5.n_codebooks == 4
    np.testing.assert_array_equal(c5, codes[:, :4])


def test_zstd_only_when_smaller(tmp_path):
    h = header(channels=1, n_frames=256, frames_per_block=128)
    codes = np.zeros((1, 9, 256), dtype=np.int64)
    codes[..., 128:] = np.random.default_rng(2).integers(0, 1024, (1, 9, 128))
    blob = container.encode_blocks(h, codes)
    first = struct.unpack_from("<BII", blob, 0)
    assert first[0] == container.ZSTD and first[1] < 9 * 128 * 10 // 8
    second = struct.unpack_from("<BII", blob, 9 + first[1])
    assert second[0] == container.RAW and second[1] == 9 * 128 * 10 // 8


def _written(tmp_path):
    h = header()
    codes = np.random.default_rng(3).integers(0, 1024, (2, 9, 180))
    p = tmp_path / "x.dac"
    container.write(p, h, codes)
    return p, p.read_bytes()


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:-5], "truncated"),
    (lambda b: b[:50], "truncated"),
    (lambda b: b[:140], "truncated"),
    (lambda b: b + b"x", "unexpected bytes"),
    (lambda b: b[:300] + bytes([b[300] ^ 0x10]) + b[301:], "CRC"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], r"header \(CRC mismatch"),
    (lambda b: b[:8] + struct.pack("<H", 7) + b[10:], "version 7 is not supported"),
    (lambda b: b"RIFF" + b[4:], "unknown magic"),
    (lambda b: b"", "unknown magic"),
])
def test_corrupt_files_are_refused(tmp_path, mangle, message):
    p, raw = _written(tmp_path)
    p.write_bytes(mangle(raw))
    with pytest.raises(DacliError, match=message):
        container.read(p)


def test_size_of_a_minute(tmp_path):
    """9 codebooks at 44.1 kHz / hop 512, 60 s mono: within 2% of 60 × 7.75 kbps / 8, header < 1 KiB.
    Uniformly random codes: a well-trained codebook's codes are close to incompressible."""
    n = -(-60 * 44100 // 512)
    h = header(channels=1, original_sample_rate=44100, original_length=60 * 44100, model_length=60 * 44100,
               n_frames=n, frames_per_block=container.DEFAULT_BLOCK_FRAMES)
    p = tmp_path / "minute.dac"
    container.write(p, h, np.random.default_rng(4).integers(0, 1024, (1, 9, n)))
    expected = 60 * 7.75 * 1000 / 8
    assert len(h.to_bytes()) < 1024
    assert abs(p.stat().st_size - expected) / expected < 0.02, (p.stat().st_size, expected)


def test_encoded_minute_is_not_larger(tmp_path, tiny44):
    """End to end through the encoder: never above the nominal size plus overhead."""
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    src = tmp_path / "minute.wav"
    sf.write(src, np.concatenate([x, x[::-1], x]), sr)
    h = codec.encode_file(tiny44, src, tmp_path / "minute.dac")
    assert h.n_codebooks == 9 and h.n_frames == -(-60 * 44100 // 512)
    assert (tmp_path / "minute.dac").stat().st_size <= 1.02 * 60 * 7.752 * 1000 / 8


# ---------------------------------------------------------------------------------------- legacy

LEGACY_FILES = sorted(p.stem for p in FIXTURES.glob("tiny*.dac"))


def test_legacy_fixture_set():
    assert len(LEGACY_FILES) == 7


@pytest.mark.parametrize("stem", LEGACY_FILES)
def test_legacy_decode_matches_official(stem, tiny44, tiny24):
    model = tiny44 if stem.startswith("tiny44") else tiny24
    legacy = container.read_legacy(FIXTURES / f"{stem}.dac")
    y = codec.decode_legacy(model, legacy)
    ref = np.load(FIXTURES / f"{stem}_decompressed.npy")
    assert y.T.shape == ref.shape
    np.testing.assert_allclose(y.T, ref, atol=1e-3, rtol=0)


def _npy_with_pickle(payload):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    import os
    p = tmp_path / "evil.dac"
    p.write_bytes(_npy_with_pickle(pickle.dumps({"codes": os.getcwd, "metadata": {}})))
    with pytest.raises(DacliError, match="not plain NumPy data"):
        container.read_legacy(p)
    p.write_bytes(_npy_with_pickle(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR."))
    with pytest.raises(DacliError, match="os.system is not allowed"):
        container.read_legacy(p)


def test_legacy_accepts_numpy1_globals(tmp_path):
    """Files written under numpy 1.x name numpy.core.multiarray._reconstruct."""
    obj = np.load(FIXTURES / "tiny44_mono_short.dac", allow_pickle=True)  # trusted fixture
    payload = pickle.dumps(obj, protocol=3)  # text GLOBAL opcodes, no frames: nothing to re-length
    assert b"numpy._core.multiarray" in payload
    p = tmp_path / "np1.dac"
    p.write_bytes(_npy_with_pickle(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")))
    lg = container.read_legacy(p)
    assert lg.codes.shape == (1, 9, 61) and lg.sample_rate == 44100 and lg.padding
