"""The .dac container: bit packing, round trips, corruption, size, legacy files."""

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
import zstandard

from dacli import codec, container, legacy
from dacli.errors import DacliError

from conftest import FIXTURES

def header(**kw):
    base = dict(model_sample_rate=44100, hop_length=512, original_sample_rate=48000, channels=2, n_codebooks=9,
                bits_per_code=10, original_length=100000, model_length=91875, n_frames=180, input_loudness=-20.5,
                gain_db=4.5, model_hash=bytes(range(32)), model_name="tiny44.pth", frames_per_block=64)
    if "n_frames" in kw and "model_length" not in kw:  # a consistent header for that many frames
        base["model_length"] = kw["n_frames"] * base["hop_length"]
        osr = kw.get("original_sample_rate", base["original_sample_rate"])
        base["original_length"] = round(base["model_length"] * osr / base["model_sample_rate"])
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


# Ways to break a written file, and what the refusal says (the browser player's reader is held to the
# same verdicts: tests/test_web.py)
CORRUPT = [
    (lambda b: b[:-5], "truncated"),
    (lambda b: b[:50], "truncated"),
    (lambda b: b[:140], "truncated"),
    (lambda b: b + b"x", "unexpected bytes"),
    (lambda b: b[:300] + bytes([b[300] ^ 0x10]) + b[301:], "CRC"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], r"header \(CRC mismatch"),
    (lambda b: b[:8] + struct.pack("<H", 7) + b[10:], "version 7 is not supported"),
    (lambda b: b"RIFF" + b[4:], "unknown magic"),
    (lambda b: b"", "unknown magic"),
]


@pytest.mark.parametrize("mangle, message", CORRUPT)
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


def test_legacy_reader_sees_what_each_fixture_holds():
    """The reader recovers each official file's layout: both models, padded and chunked ('valid'
    convolutions, several chunks), mono and stereo, fewer codebooks, and a rate the model resamples."""
    seen = {}
    for stem in LEGACY_FILES:
        lg = legacy.read(FIXTURES / f"{stem}.dac")
        channels, n_codebooks, frames = lg.codes.shape
        assert lg.channels == channels and lg.codes.dtype == np.int32  # the one codes type (dacli.codes)
        assert (not lg.padding) == ("chunked" in stem), stem
        assert (frames > lg.chunk_length) == ("chunked" in stem), stem  # several chunks where chunked
        assert n_codebooks == (3 if "nq3" in stem else 12 if stem.startswith("tiny24") else 9), stem
        assert lg.sample_rate == (48000 if "48k" in stem else 24000 if "24k" in stem else 44100), stem
        seen[stem] = (channels, lg.padding)
    assert {c for c, _ in seen.values()} == {1, 2} and {p for _, p in seen.values()} == {True, False}


@pytest.mark.parametrize("stem", LEGACY_FILES)
def test_legacy_decode_matches_official(stem, tiny44, tiny24):
    model = tiny44 if stem.startswith("tiny44") else tiny24
    y = legacy.decode(model, legacy.read(FIXTURES / f"{stem}.dac"))
    ref = np.load(FIXTURES / f"{stem}_decompressed.npy")
    assert y.T.shape == ref.shape
    np.testing.assert_allclose(y.T, ref, atol=1e-5, rtol=0)  # fp32: measured within 1e-6


def _npy_with_pickle(payload):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    import os
    p = tmp_path / "evil.dac"
    p.write_bytes(_npy_with_pickle(pickle.dumps({"codes": os.getcwd, "metadata": {}})))
    with pytest.raises(DacliError, match="not plain NumPy data"):
        legacy.read(p)
    p.write_bytes(_npy_with_pickle(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR."))
    with pytest.raises(DacliError, match="opcode STRING is not allowed"):  # refused before os.system is looked up
        legacy.read(p)


def test_legacy_accepts_numpy1_globals(tmp_path):
    """Files written under numpy 1.x name numpy.core.multiarray._reconstruct."""
    obj = np.load(FIXTURES / "tiny44_mono_short.dac", allow_pickle=True)  # trusted fixture
    payload = pickle.dumps(obj, protocol=3)  # text GLOBAL opcodes, no frames: nothing to re-length
    assert b"numpy._core.multiarray" in payload
    p = tmp_path / "np1.dac"
    p.write_bytes(_npy_with_pickle(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")))
    lg = legacy.read(p)
    assert lg.codes.shape == (1, 9, 61) and lg.sample_rate == 44100 and lg.padding


# ------------------------------------------------------------------------------ hostile headers


def _forge(h, blocks=b"", extension=b""):
    """A file with header ``h`` (not validated), a correct header CRC, ``extension`` bytes between
    the model name and the CRC (a later minor revision's fields), then ``blocks``."""
    body = h.to_bytes()[:-4]
    size = len(body) + len(extension) + 4
    body = body[:10] + struct.pack("<H", size) + body[12:] + extension
    return body + struct.pack("<I", zlib.crc32(body)) + blocks


def _valid(tmp_path, **kw):
    h = header(**kw)
    codes = np.random.default_rng(5).integers(0, 1024, (h.channels, h.n_codebooks, h.n_frames))
    return h, codes, container.encode_blocks(h, codes)


def test_extended_header_is_read(tmp_path):
    """docs/FORMAT.md: a later revision's fields between model_name and header_crc are skipped."""
    h, codes, blocks = _valid(tmp_path)
    p = tmp_path / "ext.dac"
    p.write_bytes(_forge(h, blocks, extension=bytes(range(256)) * 4))
    assert container.read_header(p) == h
    h2, c2 = container.read(p)
    assert h2 == h
    np.testing.assert_array_equal(c2, codes)


def test_bandwidth_is_stored_after_the_name(tmp_path):
    """Revision 1.1: bandwidth_hz, a u32 between model_name and header_crc; header_size = 105 + n."""
    h, codes, blocks = _valid(tmp_path, bandwidth_hz=15600)
    raw = h.to_bytes()
    n = len(h.model_name)
    assert struct.unpack_from("<H", raw, 10)[0] == len(raw) == 105 + n
    assert struct.unpack_from("<I", raw, 97 + n)[0] == 15600
    p = tmp_path / "bw.dac"
    p.write_bytes(raw + blocks)
    assert container.read_header(p) == h and container.read(p)[0].bandwidth_hz == 15600


def test_revision_1_0_header_reads_as_full_band(tmp_path):
    """A header written before bandwidth_hz existed ends with the name (header_size = 101 + n)."""
    h, codes, blocks = _valid(tmp_path, bandwidth_hz=15600)
    body = h.to_bytes()[:-8]  # without bandwidth_hz and the CRC
    body = body[:10] + struct.pack("<H", len(body) + 4) + body[12:]
    p = tmp_path / "old.dac"
    p.write_bytes(body + struct.pack("<I", zlib.crc32(body)) + blocks)
    h2, c2 = container.read(p)
    assert h2 == container.replace(h, bandwidth_hz=0)
    np.testing.assert_array_equal(c2, codes)


# Headers with a valid CRC whose fields lie
HOSTILE = [
    (dict(bandwidth_hz=21051), "bandwidth 21051 Hz"),
    (dict(bandwidth_hz=2 ** 32 - 1), "bandwidth 4294967295 Hz"),
    (dict(model_sample_rate=16000, bandwidth_hz=7001, model_length=34014, n_frames=67,
          original_length=102042), "bandwidth 7001 Hz"),
    (dict(n_frames=10 ** 8, model_length=10 ** 8 * 512, original_length=round(10 ** 8 * 512 * 48000 / 44100),
          frames_per_block=1), "too short to hold"),
    (dict(n_frames=2 ** 40, model_length=2 ** 40 * 512, original_length=2 ** 40 * 512,
          original_sample_rate=44100), "original length"),
    (dict(original_length=10 ** 9), "does not match original length"),
    (dict(n_frames=181), "181 frames for 91875 samples"),
    (dict(gain_db=float("nan")), "gain nan dB"),
    (dict(gain_db=float("inf")), "gain inf dB"),
    (dict(input_loudness=float("nan")), "loudness nan"),
    (dict(bits_per_code=17), "17 bits per code"),
    (dict(bits_per_code=0), "0 bits per code"),
    (dict(n_codebooks=65), "65 codebooks"),
    (dict(channels=0), "0 channels"),
    (dict(original_sample_rate=3, original_length=7), "sample rates"),
    (dict(hop_length=0), "hop length 0"),
    (dict(frames_per_block=0), "frames per block"),
    (dict(channels=1024, frames_per_block=65535), "frames per block"),
]


@pytest.mark.parametrize("fields, message", HOSTILE)
def test_hostile_headers_are_refused_before_allocating(tmp_path, fields, message):
    """A header with a valid CRC that lies about sizes is refused by read_header and read (with only
    a few KB of blocks behind it) instead of driving memory or output to what it claims."""
    h, _, blocks = _valid(tmp_path)
    p = tmp_path / "lie.dac"
    p.write_bytes(_forge(container.replace(h, **fields), blocks))
    with pytest.raises(DacliError, match=message):
        container.read_header(p)
    with pytest.raises(DacliError, match=message):
        container.read(p)


def block_cases():
    """A valid file with one zstd block, and files whose block sizes lie, with what the refusal says."""
    h = header(channels=1, n_frames=64, frames_per_block=64)
    codes = np.zeros((1, 9, 64), np.int64)  # compresses to a few bytes
    head = h.to_bytes()
    raw = container.pack(codes.transpose(1, 0, 2).reshape(-1), 10)
    z = zstandard.ZstdCompressor().compress(raw)
    nosize = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    ok = head + struct.pack("<BII", container.ZSTD, len(z), zlib.crc32(raw)) + z
    return ok, [
        (head + struct.pack("<BII", container.RAW, len(raw) - 1, zlib.crc32(raw)) + raw[:-1], "corrupt block"),
        (head + struct.pack("<BII", container.ZSTD, len(nosize), zlib.crc32(raw)) + nosize, "CRC mismatch"),
        (head + struct.pack("<BII", 7, len(raw), zlib.crc32(raw)) + raw, "coding 7"),
        (head + struct.pack("<BII", container.ZSTD, 2 ** 31, zlib.crc32(raw)) + z, "corrupt block"),
    ]


def test_block_sizes_are_checked():
    """A raw block must be exactly its raw size; a zstd block must declare its content size, and can
    be neither larger than zstd's bound nor smaller than zstd's largest expansion allows."""
    ok, bad = block_cases()
    assert container.parse(ok)[1].shape == (1, 9, 64)
    for blob, message in bad:
        with pytest.raises(DacliError, match=message):
            container.parse(blob)


def test_codes_that_do_not_fit_the_model_are_refused(tmp_path, tiny44):
    """12 codebooks for a 9-codebook model, or 12-bit codes for a 1024-entry codebook: refused with
    one line instead of being ignored or indexing out of range."""
    for fields, message in [(dict(n_codebooks=12), "12 codebooks of 1024 codes"),
                            (dict(bits_per_code=12), "9 codebooks of 4096 codes")]:
        h = header(channels=1, n_frames=20, model_hash=bytes.fromhex(tiny44.weights_hash),
                   original_sample_rate=44100, **fields)
        codes = np.random.default_rng(0).integers(0, 2 ** h.bits_per_code, (1, h.n_codebooks, 20))
        p = tmp_path / "x.dac"
        container.write(p, h, codes)
        with pytest.raises(DacliError, match=message):
            codec.decode_file(tiny44, p, tmp_path / "x.wav")
        assert not (tmp_path / "x.wav").exists()


# ------------------------------------------------------------------------------- hostile legacy


def _legacy_bytes():
    return (FIXTURES / "tiny44_stereo.dac").read_bytes()


@pytest.mark.parametrize("mangle, message", [
    # the dtype of the codes changed to object: NumPy would read the code bytes as pointers (SIGSEGV)
    (lambda b: b.replace(b"\x8c\x02u2", b"\x8c\x02O8", 1), "only a 0-d object array"),
    (lambda b: b.replace(b"\x8c\x02u2", b"\x8c\x02V2", 1), "dtype 'V2' is not allowed"),
    (lambda b: b.replace(b"\x8c\x02u2", b"\x8c\x02u4", 1), "does not match shape"),
    (lambda b: b.replace(b"K\x02K\tK\xad", b"K\x02K\tK\xae", 1), "does not match shape"),  # frames 173 → 174
    (lambda b: b.replace(b"\x8c\x08channels\x94K\x02", b"\x8c\x08channels\x94K\x03", 1), "2 rows of codes for 3"),
    (lambda b: b.replace(b"\x8c\x0bsample_rate\x94M\x44\xac", b"\x8c\x0bsample_rate\x94M\x03\x00", 1),
     "sample_rate = 3 is not an integer in 1000-768000"),
    (lambda b: b + b"\x00", "unexpected bytes"),
    (lambda b: b[:-200], "corrupt legacy"),
])
def test_hostile_legacy_files_are_refused(tmp_path, mangle, message):
    raw = _legacy_bytes()
    bad = mangle(raw)
    assert bad != raw
    with pytest.raises(DacliError, match=message):
        legacy.parse(bad)


def test_legacy_codes_beyond_the_codebook_are_refused(tmp_path):
    """The format has no checksum; codes outside the model's codebook are the damage it can detect."""
    model = type("M", (), {"n_codebooks": 9, "codebook_size": 512})()
    lg = legacy.parse(_legacy_bytes())
    assert lg.codes.max() >= 512
    with pytest.raises(DacliError, match="beyond the model's 512"):
        legacy.check_model(lg, model)
    model.n_codebooks = 4
    with pytest.raises(DacliError, match="9 codebooks, the model 4"):
        legacy.check_model(lg, model)
