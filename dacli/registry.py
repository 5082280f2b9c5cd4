"""Where models come from: the bundled model in ``weights/``, the four official releases (downloaded
into a user cache), any checkpoint path, or a folder of ONNX graphs that ``dacli export`` wrote.
``load_model`` is the one entry point. torch and the model
are imported when a model is loaded, so listing models costs no torch start-up."""

import json
import os
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, NamedTuple, Optional, Tuple, Union

from . import container, legacy
from .errors import DacliError
from .fileio import atomic_output
from .onnx_model import EXPORT_INFO

if TYPE_CHECKING:
    from .model import DAC

DEFAULT_MODEL = "dacli-44khz"


def _weights_dir():
    """$DACLI_WEIGHTS_DIR; else the copy an installed wheel carries (dacli/weights/); else the
    repository's weights/ beside the package (editable installs, a source checkout)."""
    if os.environ.get("DACLI_WEIGHTS_DIR"):
        return Path(os.environ["DACLI_WEIGHTS_DIR"])
    here = Path(__file__).resolve().parent
    return here / "weights" if (here / "weights").is_dir() else here.parent / "weights"


WEIGHTS_DIR = _weights_dir()
BUNDLED = {DEFAULT_MODEL: "dacli_44khz_7.75kbps.pth"}



class BundledVersion(NamedTuple):
    """One committed version of the bundled model (weights/VERSIONS.json)."""
    version: str             # e.g. "dacli-44khz-v5": the name a .dac header records
    step: int                # training step of the weights
    sha256: str              # dacli.model.weights_hash of the state dict (the .dac header's model hash)
    commit: Optional[str]    # a commit whose weights/ carries these weights (None: not committed yet)


def bundled_versions() -> List[BundledVersion]:
    """Every version of the bundled model ever committed, oldest first; the last is the one shipped."""
    try:
        table = json.loads((WEIGHTS_DIR / "VERSIONS.json").read_text())
    except FileNotFoundError:
        return []
    return [BundledVersion(v["version"], int(v["step"]), v["sha256"], v.get("commit")) for v in table["versions"]]


def bundled_version(sha256: str) -> Optional[BundledVersion]:
    """The bundled-model version with these weights, or None."""
    return next((v for v in bundled_versions() if v.sha256 == sha256), None)


def is_bundled_name(name: str) -> bool:
    """Whether a model name (as a .dac header records it) is the bundled model, any version."""
    return name == DEFAULT_MODEL or name.startswith(DEFAULT_MODEL + "-v")


def in_checkout() -> bool:
    """Whether dacli runs from a source checkout (its weights/ beside a git repository), not a wheel."""
    return (WEIGHTS_DIR.parent / ".git").exists()


def describe_weights(v: BundledVersion) -> str:
    """A bundled version, and how to get its weights when it is not the one shipped: from a source
    checkout, the command that extracts them; from an installed wheel, where they are."""
    if v == bundled_versions()[-1]:
        return f"{v.version} (step {v.step}), the bundled model: decode without --model"
    if v.commit is None:
        return f"{v.version} (step {v.step})"
    name = BUNDLED[DEFAULT_MODEL]
    if not in_checkout():
        return (f"{v.version} (step {v.step}), whose weights are weights/{name} at commit {v.commit[:12]} of "
                f"dacli's source repository; decode with --model pointing at that file")
    return (f"{v.version} (step {v.step}), carried by commit {v.commit[:12]}: "
            f"git show {v.commit[:12]}:weights/{name} > {v.version}.pth, then --model {v.version}.pth")


def model_for_file(path: Union[str, Path], override: Optional[str] = None) -> str:
    """Which model decodes the file ``path``: ``override`` (a name or checkpoint path) when given; else
    the model its header records: the bundled model for any of its versions (decoding then names the
    version a file needs if it is not the one shipped), or an official model by name. Files of the
    official tool record no model and need ``override``."""
    if legacy.is_legacy(path):  # opens the file: one-line errors for missing files, folders, FIFOs
        if override is None:
            raise DacliError(f"{path}: a file of the official tool records no model; pass --model")
        return override
    return model_for_name(container.read_header(path).model_name, path, override)


def model_for_name(name: str, where: Union[str, Path], override: Optional[str] = None) -> str:
    """Which model decodes codes that record the model ``name`` (a .dac header, a dataset's row
    ``where``): ``override`` when given, the bundled model for any of its versions, an official model."""
    if override is not None:
        return override
    if is_bundled_name(name):
        return DEFAULT_MODEL
    if name in BUNDLED or name in OFFICIAL:
        return name
    raise DacliError(f"{where}: encoded with model {name!r}, which is not a known name; pass --model PATH")


DOWNLOAD_CHUNK = 1 << 20  # bytes per read of a download (and per progress update)
OFFICIAL_BASE = "https://github.com/descriptinc/descript-audio-codec/releases/download"
# name → (release tag, asset file, file name in the official cache), as the official package's
# download code names them
OFFICIAL = {
    "44khz-8kbps": ("0.0.1", "weights.pth", "weights_44khz_8kbps_0.0.1.pth"),
    "24khz": ("0.0.4", "weights_24khz.pth", "weights_24khz_8kbps_0.0.4.pth"),
    "16khz": ("0.0.5", "weights_16khz.pth", "weights_16khz_8kbps_0.0.5.pth"),
    "44khz-16kbps": ("1.0.0", "weights_44khz_16kbps.pth", "weights_44khz_16kbps_1.0.0.pth"),
}


def cache_dir() -> Path:
    """The user cache for downloaded weights: $DACLI_CACHE, else $XDG_CACHE_HOME/dacli, else ~/.cache/dacli."""
    if os.environ.get("DACLI_CACHE"):
        return Path(os.environ["DACLI_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dacli"


def official_url(name: str, base: Optional[str] = None) -> str:
    tag, asset, _ = OFFICIAL[name]
    return f"{base or os.environ.get('DACLI_DOWNLOAD_BASE', OFFICIAL_BASE)}/{tag}/{asset}"


def candidates(name: str) -> List[Path]:
    """Paths where a model of this name may already be on disk, in order of preference."""
    if name in BUNDLED:
        return [WEIGHTS_DIR / BUNDLED[name]]
    if name in OFFICIAL:
        fname = OFFICIAL[name][2]
        return [cache_dir() / fname, Path.home() / ".cache" / "descript" / "dac" / fname]
    return []


def locate(name: str) -> Optional[Path]:
    """The file of a known model name, or None when it is not on disk."""
    return next((p for p in candidates(name) if p.is_file()), None)


def models() -> List[Tuple[str, str, Optional[Path], str]]:
    """[(name, kind, path or None, version)] for the bundled and official models: the bundled model's
    version ("v10"), an official release's tag."""
    versions = bundled_versions()
    shipped = versions[-1].version.rsplit("-", 1)[-1] if versions else "?"
    rows = [(n, "bundled", locate(n), shipped) for n in BUNDLED]
    return rows + [(n, "official", locate(n), OFFICIAL[n][0]) for n in OFFICIAL]


def download(name: str, base: Optional[str] = None, progress: Optional[Callable[[int, int], None]] = None,
             timeout: float = 60) -> Path:
    """Fetch an official release into the cache (atomic: temp file + rename). Returns the path."""
    if name not in OFFICIAL:
        raise DacliError(f"unknown official model {name!r}; known: {', '.join(OFFICIAL)}")
    dest = cache_dir() / OFFICIAL[name][2]
    url = official_url(name, base)
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except Exception as e:
                raise DacliError(f"download of {name} from {url} failed: {e}") from None
            with resp:
                if getattr(resp, "status", 200) != 200:
                    raise DacliError(f"download of {name} from {url} failed: HTTP {resp.status}")
                total = int(resp.headers.get("Content-Length") or 0)
                got = 0
                while True:
                    chunk = resp.read(DOWNLOAD_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(len(chunk), total)
                if total and got != total:
                    raise DacliError(f"download of {name} from {url} was cut short ({got} of {total} bytes)")
        from .model import load_checkpoint
        load_checkpoint(tmp)  # refuse to cache something that is not a valid checkpoint
    return dest


def load_model(name_or_path: Union[str, Path, None] = None, device: str = "auto", precision: str = "auto",
               runtime: str = "torch") -> "DAC":
    """A DAC ready for fast inference: loaded, then prepared by :func:`dacli.runtime.prepare`.

    ``name_or_path``: a checkpoint path, the bundled model's name (default), or an official model name
    (``44khz-8kbps``, ``44khz-16kbps``, ``24khz``, ``16khz``) already in the cache (see ``dacli download``).
    ``precision``: "auto" (the default: "mixed" where the CPU or GPU computes bfloat16 natively, else
    "fp32"), "fp32", "mixed" (bfloat16 except the decoder's last blocks: fp32's quality, codes may
    differ a little) or "bf16" (fastest, noisier); see :mod:`dacli.runtime.hardware`.
    ``model.precision`` says which one runs. The process is left as it is: :func:`dacli.tune_process`
    applies the settings inference runs best with (the command line does).
    ``runtime="onnx"``: ``name_or_path`` is a folder of ``dacli export``, run by onnxruntime without torch
    (:class:`dacli.onnx_model.OnnxDAC`: decoding, fp32 on the CPU)."""
    if runtime == "onnx" or is_export(name_or_path):
        from .onnx_model import OnnxDAC
        if runtime != "onnx":
            raise DacliError(f"{name_or_path}: an exported model (dacli export); decode with it with --runtime onnx")
        return OnnxDAC(name_or_path or "")  # type: ignore[return-value]
    try:
        import torch  # noqa: F401
    except ImportError:
        raise DacliError("torch is not installed here: decode with --runtime onnx --model DIR (a folder of "
                         "'dacli export'), or install torch") from None
    from .runtime import prepare
    return prepare(load_plain(name_or_path), device, precision)


def load_plain(name_or_path: Union[str, Path, None] = None) -> "DAC":
    """The plain DAC of a model name or checkpoint path (as :func:`load_model` takes it), named, not
    prepared: what :func:`load_model` prepares and :mod:`dacli.export` exports."""
    from .model import load_checkpoint
    path, label = checkpoint_path(name_or_path)
    model = load_checkpoint(path)
    version = bundled_version(model.weights_hash)  # a bundled model (from weights/ or a file) is named
    model.name = version.version if version else label  # by its version
    return model


def is_export(name_or_path: Union[str, Path, None]) -> bool:
    """Whether ``name_or_path`` is a folder written by ``dacli export`` (ONNX graphs)."""
    return name_or_path is not None and (Path(name_or_path) / EXPORT_INFO).is_file()


def checkpoint_path(name_or_path: Union[str, Path, None] = None) -> Tuple[Path, str]:
    """The checkpoint file of a model name or path (the bundled model by default) → (path, label)."""
    name = name_or_path or DEFAULT_MODEL
    path: Optional[Path]
    if isinstance(name, Path) or os.path.exists(str(name)) or str(name).endswith(".pth"):
        path, label = Path(name), Path(name).name
    elif name in BUNDLED or name in OFFICIAL:
        path, label = locate(str(name)), str(name)
        if path is None:
            hint = f"run 'dacli download {name}'" if name in OFFICIAL else f"expected {candidates(name)[0]}"
            raise DacliError(f"model {name} is not on this machine; {hint}")
    else:
        raise DacliError(f"unknown model {name!r}: not a file, and not one of "
                         f"{', '.join(list(BUNDLED) + list(OFFICIAL))}")
    return path, label
