"""The bundled default model in weights/: official checkpoint layout, the default of the CLI, and a
quality floor measured on a real clip (it guards against shipping broken or wrong weights)."""

import numpy as np
import soundfile as sf
import torch
from click.testing import CliRunner

import dacli
from dacli import codec, container, registry
from dacli.cli import cli
from dacli.metrics import mel_distance

from conftest import FIXTURES

PATH = registry.WEIGHTS_DIR / registry.BUNDLED[registry.DEFAULT_MODEL]
MEL_CEILING = 2.0  # measured 2.04 on this clip at step 1800, 2.01 at 3600, 1.64 at 7400; random weights 5.6


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
    assert model.name == registry.DEFAULT_MODEL and model.kbps() == model.kbps(9)
    assert abs(model.kbps() - 7.752) < 1e-3
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    x = x[:5 * sr][None]
    codes = codec.encode_array(model, x)
    y = codec.decode_array(model, codes)[:, :x.shape[1]]
    mel = float(mel_distance(torch.from_numpy(y), torch.from_numpy(x), sr))
    assert mel < MEL_CEILING, mel


def test_cli_defaults_to_bundled_model(tmp_path):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    sf.write(tmp_path / "a.wav", x[:sr * 2], sr)
    r = CliRunner().invoke(cli, ["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.dac"), "-q"])
    assert r.exit_code == 0, r.output
    assert container.read_header(tmp_path / "a.dac").model_name == registry.DEFAULT_MODEL
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.dac"), "-o", str(tmp_path / "b.wav"), "-q"])
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "b.wav").frames == 2 * sr
    assert str(PATH) in CliRunner().invoke(cli, ["models"]).output
