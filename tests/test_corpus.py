"""The corpus builder on a fake unpacked package (no apt): deterministic output, manifest, licences."""

import numpy as np
import soundfile as sf

from dacli.training import corpus


def fake_package(cache, name):
    root = cache / "x" / name
    rng = np.random.default_rng(0)
    for lang in ("en", "fr"):
        d = root / "usr/share/fake/voices" / lang
        d.mkdir(parents=True)
        for i in range(6):
            x = np.concatenate([np.zeros(2000), 0.3 * np.sin(np.arange(20000) * 0.05 * (i + 1)), np.zeros(3000)])
            sf.write(d / f"w{i}.ogg", x, 22050)
    m = root / "usr/share/fake/music"
    m.mkdir(parents=True)
    sf.write(m / "song.flac", 0.2 * rng.standard_normal((48000 * 40, 2)), 48000)
    doc = root / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Fake licence text")
    (root / ".version").write_text("1.0-1")


def test_build_is_deterministic(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fake_package(cache, "fake-data")
    monkeypatch.setenv("DACLI_CORPUS_CACHE", str(cache))
    monkeypatch.setitem(corpus.SETS, "fake", [
        corpus.Source("voices", "fake-data", "speech", ("usr/share/fake/voices/*/*.ogg",), 8, "GPL-2+",
                      seed=1, segment=4.0, group_depth=-2),
        corpus.Source("song", "fake-data", "music", ("usr/share/fake/music/*.flac",), 12, "CC0", mode="crop",
                      seed=2, segment=5.0),
    ])
    corpus.build("fake", tmp_path / "a")
    corpus.build("fake", tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.flac"))
    assert files == sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*.flac"))
    assert any(f.startswith("speech/voices_") for f in files) and any(f.startswith("music/song_") for f in files)
    for f in files:
        a, sr = sf.read(tmp_path / "a" / f)
        b, _ = sf.read(tmp_path / "b" / f)
        assert sr == 44100 and a.ndim == 1 and np.array_equal(a, b) and np.abs(a).max() <= 0.9
    man = (tmp_path / "a" / "manifest.tsv").read_text().splitlines()
    assert man[0].split("\t")[:4] == ["file", "offset_in_file", "package", "version"]
    rows = [r.split("\t") for r in man[1:]]
    assert all(r[2] == "fake-data" and r[3] == "1.0-1" for r in rows)
    assert {r[7] for r in rows} == {"GPL-2+", "CC0"}
    langs = {r[4].split("/")[-2] for r in rows if r[0].startswith("speech")}
    assert langs == {"en", "fr"}  # round-robin over the groups
    music = sum(float(r[6]) for r in rows if r[0].startswith("music"))
    assert 11 <= music <= 12.01
    assert (tmp_path / "a" / "LICENSES" / "fake-data.copyright").read_text() == "Fake licence text"


def test_full_band_sources_skip_band_limited_recordings(tmp_path, monkeypatch):
    """full_band=True: a recording stored at 22.05 kHz (no content above 11.025 kHz once resampled) is
    left out, a 44.1 kHz one with high-frequency content is kept; the check itself on tones."""
    t = np.arange(44100) / 44100
    assert corpus._full_band(0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.sin(2 * np.pi * 15000 * t))
    assert not corpus._full_band(0.3 * np.sin(2 * np.pi * 440 * t[:4000]))  # too short to tell
    assert not corpus._full_band(0.3 * np.sin(2 * np.pi * 440 * t))
    assert not corpus._full_band(np.zeros(0))
    root = tmp_path / "cache" / "x" / "band-data"
    d = root / "usr/share/band"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sf.write(d / "narrow.wav", 0.3 * rng.standard_normal(22050 * 3), 22050)
    sf.write(d / "wide.wav", 0.3 * rng.standard_normal(44100 * 3), 44100)
    (root / ".version").write_text("1")
    monkeypatch.setenv("DACLI_CORPUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(corpus.SETS, "band", [
        corpus.Source("b", "band-data", "env", ("usr/share/band/*.wav",), 60, "CC0", full_band=True)])
    corpus.build("band", tmp_path / "out")
    rows = (tmp_path / "out" / "manifest.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[4] for r in rows] == ["usr/share/band/wide.wav"]


def test_a_build_records_its_definition(tmp_path, monkeypatch):
    root = tmp_path / "cache" / "x" / "d"
    (root / "s").mkdir(parents=True)
    sf.write(root / "s" / "a.wav", 0.3 * np.random.default_rng(0).standard_normal(44100 * 2), 44100)
    (root / ".version").write_text("1")
    monkeypatch.setenv("DACLI_CORPUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(corpus.SETS, "one", [corpus.Source("a", "d", "env", ("s/*.wav",), 5, "CC0")])
    assert not corpus.check("one", tmp_path / "out")
    corpus.build("one", tmp_path / "out")
    assert corpus.check("one", tmp_path / "out")
    monkeypatch.setitem(corpus.SETS, "one", [corpus.Source("a", "d", "env", ("s/*.wav",), 6, "CC0")])
    assert not corpus.check("one", tmp_path / "out")  # the definition changed: rebuild
