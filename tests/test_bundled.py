"""The bundled default model in weights/: official checkpoint layout, the default of the CLI, and a
quality floor measured on a real clip (it guards against shipping broken or wrong weights)."""

from dataclasses import replace

import numpy as np
import soundfile as sf
import torch
from click.testing import CliRunner

import dacli
from dacli import container, registry, windows
from dacli.cli import cli
from dacli.metrics import mel_distance

from conftest import FIXTURES

PATH = registry.WEIGHTS_DIR / registry.BUNDLED[registry.DEFAULT_MODEL]
# v10 on this clip: 1.389 (fp32) and 1.390 (mixed, bf16 emulated) on an AMD EPYC family 25 model 1; with 8
# codebooks 1.421, with 1 codebook 1.91; an earlier version (v5) 1.64, random weights 5.6
MEL_CEILING = 1.40


def test_bundled_checkpoint_layout():
    assert PATH.is_file(), "the bundled weights are missing"
    assert PATH.stat().st_size < 50 * 2 ** 20
    ck = torch.load(PATH, map_location="cpu", weights_only=True)
    assert set(ck) == {"state_dict", "metadata"}
    kw = ck["metadata"]["kwargs"]
    assert (kw["sample_rate"], kw["n_codebooks"], kw["codebook_size"]) == (44100, 9, 1024)
    assert int(np.prod(kw["encoder_rates"])) == 512
    assert any(k.endswith(".weight_g") for k in ck["state_dict"])
    assert not any("opt" in k or "disc" in k for k in ck["metadata"])


def test_default_model_quality_floor():
    model = dacli.load_model(device="cpu")
    assert model.name == registry.bundled_versions()[-1].version and model.kbps() == model.kbps(9)
    assert abs(model.kbps() - 7.752) < 1e-3
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    x = x[:5 * sr][None]
    codes = windows.encode_array(model, x)
    y = windows.decode_array(model, codes)[:, :x.shape[1]]
    mel = float(mel_distance(torch.from_numpy(y), torch.from_numpy(x), sr))
    assert mel < MEL_CEILING, mel
    fewer = windows.decode_array(model, codes[:, :8])[:, :x.shape[1]]  # the ceiling tells a codebook apart
    assert float(mel_distance(torch.from_numpy(fewer), torch.from_numpy(x), sr)) > MEL_CEILING


def test_cli_defaults_to_bundled_model(tmp_path):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    sf.write(tmp_path / "a.wav", x[:sr * 2], sr)
    r = CliRunner().invoke(cli, ["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.dac"), "-q"])
    assert r.exit_code == 0, r.output
    header = container.read_header(tmp_path / "a.dac")
    assert header.model_name == registry.bundled_versions()[-1].version
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.dac"), "-o", str(tmp_path / "b.wav"), "-q"])
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "b.wav").frames == 2 * sr
    out = CliRunner().invoke(cli, ["models"]).output
    line = next(ln for ln in out.splitlines() if ln.startswith(registry.DEFAULT_MODEL))
    assert line.split() == [registry.DEFAULT_MODEL, "bundled", registry.bundled_versions()[-1].version.split("-")[-1],
                            str(PATH)]

    # the same codes as an earlier version would have written them (its hash, its name, or the
    # unversioned name of files from before versions): refused with the version and where to get it
    codes = container.read(tmp_path / "a.dac")[1]
    v3 = registry.bundled_versions()[2]
    for name in (v3.version, registry.DEFAULT_MODEL):
        container.write(tmp_path / "old.dac", replace(header, model_hash=bytes.fromhex(v3.sha256), model_name=name),
                        codes)
        r = CliRunner().invoke(cli, ["decode", str(tmp_path / "old.dac"), "-o", str(tmp_path / "c.wav"), "-q"])
        assert r.exit_code == 1 and not (tmp_path / "c.wav").exists()
        line = r.output.strip()
        assert "\n" not in line and "Traceback" not in line
        assert f"made with {v3.version} (step {v3.step})" in line and f"git show {v3.commit[:12]}:weights/{PATH.name}" in line
        assert f"this model is {registry.bundled_versions()[-1].version}" in line


def test_an_installed_wheel_names_the_weights_without_git(monkeypatch):
    """Outside a source checkout the message for an earlier version says where its weights are, and
    tells nobody to run git."""
    v3 = registry.bundled_versions()[2]
    monkeypatch.setattr(registry, "in_checkout", lambda: False)
    text = registry.describe_weights(v3)
    assert "git" not in text and v3.commit[:12] in text
    assert f"weights/{PATH.name}" in text and "--model" in text


def test_versions_table_names_the_shipped_weights():
    """weights/VERSIONS.json: the last version is the file in weights/ (a promotion that forgot the table
    fails here), names and hashes are unique, and every earlier version names the commit carrying it."""
    versions = registry.bundled_versions()
    assert versions[-1].sha256 == dacli.load_model(device="cpu").weights_hash
    assert [v.version for v in versions] == [f"{registry.DEFAULT_MODEL}-v{i}" for i in range(1, len(versions) + 1)]
    assert len({v.sha256 for v in versions}) == len(versions)
    assert all(v.commit and len(v.commit) == 40 for v in versions[:-1])
    assert [v.step for v in versions] == sorted(v.step for v in versions)
    meta = torch.load(PATH, map_location="cpu", weights_only=True)["metadata"].get("dacli", {})
    assert meta.get("version", versions[-1].version) == versions[-1].version  # recorded from v6 on
