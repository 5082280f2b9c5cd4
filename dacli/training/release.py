"""Releasing a version of the bundled model: exported weights become the next ``dacli-44khz-vN``
(the weights file in ``weights/`` and its row in ``weights/VERSIONS.json``, which records for every
version the commit that carries it)."""

import json
import subprocess
from pathlib import Path

import torch

from ..errors import DacliError
from ..fileio import atomic_output
from ..model import load_checkpoint
from ..registry import DEFAULT_MODEL


def promote(src, weights_dir, head_commit):
    """Make the exported weights ``src`` the next version of the bundled model: written (generator only,
    official layout, its version name in ``metadata["dacli"]["version"]``) over the bundled file in
    ``weights_dir``, and appended to ``weights_dir/VERSIONS.json``. ``head_commit``: the commit that
    carries the version being replaced (recorded for it when it has none yet). Returns the new version."""
    weights_dir = Path(weights_dir)
    table_path = weights_dir / "VERSIONS.json"
    table = json.loads(table_path.read_text())
    dst = weights_dir / table["file"]
    sha = load_checkpoint(src).weights_hash
    versions = table["versions"]
    if any(v["sha256"] == sha for v in versions):
        raise DacliError(f"{src}: these weights already are {next(v['version'] for v in versions if v['sha256'] == sha)}")
    if versions and versions[-1]["commit"] is None:
        versions[-1]["commit"] = head_commit
    name = f"{DEFAULT_MODEL}-v{len(versions) + 1}"
    ck = torch.load(src, map_location="cpu", weights_only=True)
    ck["metadata"].setdefault("dacli", {})["version"] = name
    versions.append({"version": name, "step": int(ck["metadata"]["dacli"].get("step", 0)), "sha256": sha,
                     "commit": None})
    for obj, path, save in ((ck, dst, torch.save),
                            (table, table_path, lambda o, f: Path(f).write_text(json.dumps(o, indent=1) + "\n"))):
        with atomic_output(path) as tmp:
            save(obj, tmp)
    return name


def head_carrying(path) -> str:
    """The commit at HEAD, after checking that it carries ``path`` as it is on disk."""
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True)
    if git("diff", "--quiet", "HEAD", "--", str(path)).returncode != 0:
        raise DacliError(f"{path} differs from HEAD's: commit it (or check it out) before promoting")
    return git("rev-parse", "HEAD").stdout.strip()
