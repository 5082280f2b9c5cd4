"""The Ray engine on a real cluster of three nodes on this machine — a head without CPUs and two worker
nodes of one CPU each, all on 127.0.0.1 with small object stores — driven through the real command
line: one complete output per input, byte for byte what `dacli encode` makes of the file alone; a
worker killed mid-batch, a node removed mid-run, the driver killed with SIGKILL and a rerun that
encodes only the rest; corrupt files reported while the corpus goes on; bad options refused."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import dacli
from dacli import container, dataset

from conftest import FIXTURES

pytestmark = pytest.mark.slow  # a system test: make test-quick leaves it out

TINY = str(FIXTURES / "tiny44.pth")
ENV = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, and a home folder of its own for everything Ray keeps there (its token file)."""
    home, saved = tmp_path_factory.mktemp("home"), os.environ.get("HOME")
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", HOME=str(home))
    ENV["HOME"] = str(home)
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, node_ip_address="127.0.0.1",
                                                          object_store_memory=80 << 20, include_dashboard=False))
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=80 << 20)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        if saved is not None:
            os.environ["HOME"] = ENV["HOME"] = saved


def corpus(folder, n=8, seconds=(1, 2, 3)):
    """Clips of 1-3 s, some stereo, some at 48 or 22.05 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        rate = (44100, 48000, 22050)[i % 3]
        sf.write(folder / f"c{i:02d}.wav", 0.1 * rng.standard_normal((rate * seconds[i % len(seconds)], 1 + i % 2)), rate)
    return folder


def driver(inp, out, *extra, address=None, wait=True):
    args = [sys.executable, "-m", "dacli", "encode", str(inp), "-o", str(out), "--engine", "ray", "--model", TINY,
            "--precision", "fp32", "--workers", "2", *(["--address", address] if address else []), *map(str, extra)]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=ENV)
    if not wait:
        return p
    err = p.communicate(timeout=300)[1]
    return p.returncode, err


def reports(out):
    """A run's reports: in a folder of .dac files, beside a dataset folder."""
    out = Path(out)
    return list(out.glob("dacli-report-*.tsv")) + list(out.parent.glob(f"{out.name}.dacli-report-*.tsv"))


def report(out):
    """The newest report's rows: {input name: (status, reason, worker)}."""
    path = sorted(reports(out), key=lambda p: p.stat().st_mtime)[-1]
    lines = path.read_text().splitlines()
    assert lines[0] == "# precision fp32"
    return {Path(r[0]).name: (r[2], r[3], r[5]) for r in (ln.split("\t") for ln in lines[2:])}


def outputs(out):
    return sorted(p.name for p in Path(out).glob("*.dac"))


def stored(out, fmt):
    """The inputs whose codes are in ``out``, each checked complete: .dac files (every CRC read), or the
    rows of the complete shards, each input in exactly one."""
    if fmt == "dac":
        for f in Path(out).glob("*.dac"):
            container.read(f)
        return [Path(n).stem for n in outputs(out)]
    rows = [p for s in dataset.shards(out) for p in pq.read_table(s, columns=["path"]).column("path").to_pylist()]
    assert len(rows) == len(set(rows)), "an input in two shards"
    return sorted(Path(p).stem for p in rows)


def no_leftovers(out):
    assert not [n for n in os.listdir(out) if n.endswith(".part")]


def settled(cond, timeout=30):
    """Wait for ``cond`` (processes end asynchronously after their cluster is shut down)."""
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.25)
    return cond()


def wait_for(cond, p, timeout=120):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert cond(), "the run ended before the fault could be made"


def test_outputs_match_the_cli_and_bad_files_are_reported(cluster, tmp_path):
    inp = corpus(tmp_path / "in")
    (inp / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(300))
    (inp / "empty.flac").write_bytes(b"")
    rc, err = driver(inp, tmp_path / "out", address=cluster.address)
    assert rc == 1 and "Traceback" not in err, err
    assert "encoded 8 file(s), skipped 0, failed 2" in err and "hours per hour" in err, err
    rows = report(tmp_path / "out")
    assert {k: v[0] for k, v in rows.items()} == {**{f"c{i:02d}.wav": "ok" for i in range(8)},
                                                  "corrupt.wav": "failed", "empty.flac": "failed"}
    assert "cannot read audio" in rows["corrupt.wav"][1] and all(v[2].count(":") == 1 for v in rows.values())
    assert outputs(tmp_path / "out") == [f"c{i:02d}.dac" for i in range(8)]
    for i in (0, 1, 2, 5):  # byte for byte what the CLI makes of the file alone (fp32, one thread)
        alone = tmp_path / f"alone{i}.dac"
        r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(inp / f"c{i:02d}.wav"), "-o", str(alone),
                            "--model", TINY, "--precision", "fp32", "-q"], env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert alone.read_bytes() == (tmp_path / "out" / f"c{i:02d}.dac").read_bytes(), i
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.dac")}
    rc, err = driver(inp, tmp_path / "out", address=cluster.address)  # again: nothing to do but the bad ones
    assert rc == 1 and "encoded 0 file(s), skipped 8, failed 2" in err, err
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.dac")}
    rc, err = driver(inp, tmp_path / "out", "--n-codebooks", 3, address=cluster.address)  # other settings
    assert rc == 1 and "encoded 0 file(s), skipped 0, failed 10" in err, err
    assert f"{tmp_path / 'out' / 'c00.dac'} exists with 9 codebooks, asked 3: --overwrite to replace" in err, err
    assert report(tmp_path / "out")["c00.wav"][0] == "failed"
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.dac")}


def test_traffic_stays_on_loopback(cluster):
    ss = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout.splitlines()
    ray_lines = [ln for ln in ss if any(n in ln for n in ("raylet", "gcs_server", "ray::"))]
    assert ray_lines, "no connection of the cluster found"
    for ln in ray_lines:
        local, peer = ln.split()[3:5]
        assert local.startswith(("127.", "[::1]", "[::ffff:127.")) and peer.startswith(("127.", "[::1]", "[::ffff:127.")), ln


@pytest.mark.parametrize("fmt", ["dac", "parquet"])
def test_a_worker_killed_mid_batch_loses_nothing(cluster, tmp_path, fmt):
    inp = corpus(tmp_path / "in", n=12, seconds=(3, 4))
    p = driver(inp, tmp_path / "out", "--format", fmt, address=cluster.address, wait=False)
    wait_for(lambda: len(stored(tmp_path / "out", fmt)) >= 1, p)
    pids = subprocess.run(["pgrep", "-f", "ray::MapWorker"], capture_output=True, text=True).stdout.split()
    assert pids, "no worker process found"
    os.kill(int(pids[0]), signal.SIGKILL)
    err = p.communicate(timeout=300)[1]
    assert p.returncode == 0, err
    assert stored(tmp_path / "out", fmt) == [f"c{i:02d}" for i in range(12)]
    rows = report(tmp_path / "out")
    assert {v[0] for v in rows.values()} == {"ok"}
    no_leftovers(tmp_path / "out")
    if fmt == "parquet":  # the codes are those of the .dac files, and the report names each input's shard
        local = tmp_path / "local"
        r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(inp / "c00.wav"), str(inp / "c05.wav"), "-o",
                            str(local), "--model", TINY, "--precision", "fp32", "-q"], env=ENV, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        for row in dacli.read_dataset(tmp_path / "out"):
            if row["path"] in ("c00.wav", "c05.wav"):
                assert np.array_equal(row["codes"], dacli.read_codes(local / row["path"].replace(".wav", ".dac"))[0])
        names = {p.name for p in dataset.shards(tmp_path / "out")}
        assert not list((tmp_path / "out").glob("dacli-report-*"))  # beside the dataset, not among its shards
        lines = sorted(reports(tmp_path / "out"))[-1].read_text().splitlines()[2:]
        assert {Path(ln.split("\t")[1]).name for ln in lines} <= names


@pytest.mark.parametrize("fmt", ["dac", "parquet"])
def test_the_driver_killed_then_a_rerun_encodes_only_the_rest(cluster, tmp_path, fmt):
    inp = corpus(tmp_path / "in", n=12, seconds=(3, 4))
    p = driver(inp, tmp_path / "out", "--format", fmt, address=cluster.address, wait=False)
    wait_for(lambda: len(stored(tmp_path / "out", fmt)) >= 2, p)
    p.kill()
    p.wait(timeout=60)
    time.sleep(3)  # the cluster ends the dead driver's workers
    done = stored(tmp_path / "out", fmt)
    assert 2 <= len(done) < 12, done
    files = [f for f in os.listdir(tmp_path / "out") if not f.startswith((".", "dacli-report"))]
    mtimes = {f: (tmp_path / "out" / f).stat().st_mtime_ns for f in files}
    rc, err = driver(inp, tmp_path / "out", "--format", fmt, address=cluster.address)
    assert rc == 0 and f"encoded {12 - len(done)} file(s), skipped {len(done)}, failed 0" in err, err
    assert stored(tmp_path / "out", fmt) == [f"c{i:02d}" for i in range(12)]
    assert mtimes == {f: (tmp_path / "out" / f).stat().st_mtime_ns for f in files}
    no_leftovers(tmp_path / "out")


@pytest.mark.parametrize("fmt", ["dac", "parquet"])
def test_a_node_that_leaves_mid_run_loses_nothing(cluster, tmp_path, fmt):
    inp = corpus(tmp_path / "in", n=12, seconds=(3, 4))
    p = driver(inp, tmp_path / "out", "--format", fmt, address=cluster.address, wait=False)
    wait_for(lambda: len(stored(tmp_path / "out", fmt)) >= 1, p)
    leaving = list(cluster.worker_nodes)[-1]
    cluster.remove_node(leaving)
    try:
        err = p.communicate(timeout=300)[1]
        assert p.returncode == 0, err
        assert stored(tmp_path / "out", fmt) == [f"c{i:02d}" for i in range(12)]
    finally:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=80 << 20)
        cluster.wait_for_nodes()


def test_bad_options_and_a_missing_ray_are_one_line(cluster, tmp_path):
    inp = corpus(tmp_path / "in", n=2, seconds=(1,))
    for extra, needle in ((["--workers", "0"], "--workers must be at least 1"),
                          (["--gpus-per-worker", "-0.5"], "--gpus-per-worker must be 0 or more"),
                          (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1")):
        r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(inp), "-o", str(tmp_path / "out"),
                            "--engine", "ray", "--model", TINY, *extra], env=ENV, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "out").exists()
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no ray here')\n")
    r = subprocess.run([sys.executable, "-m", "dacli", "encode", str(inp), "-o", str(tmp_path / "out"), "--engine",
                        "ray", "--model", TINY], env=dict(ENV, PYTHONPATH=str(tmp_path / "shim")),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == "dacli: error: --engine ray needs Ray: pip install 'dacli[ray]'"
    r = subprocess.run([sys.executable, "-c", "import sys, dacli, dacli.cli, dacli.codec; "
                        "print('ray' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == "False"  # the core never imports Ray


def _ray_processes():
    out = subprocess.run(["pgrep", "-f", "raylet|gcs_server|ray::"], capture_output=True, text=True).stdout
    return set(out.split())


def test_a_local_instance_is_started_and_stopped_even_on_ctrl_c(cluster, tmp_path):
    before = _ray_processes()
    inp = corpus(tmp_path / "in", n=3, seconds=(1,))
    rc, err = driver(inp, tmp_path / "out")
    assert rc == 0 and "encoded 3 file(s)" in err, err
    assert settled(lambda: _ray_processes() <= before), "the local instance left processes behind"
    big = corpus(tmp_path / "big", n=12, seconds=(3, 4))
    p = subprocess.Popen([sys.executable, "-m", "dacli", "encode", str(big), "-o", str(tmp_path / "out2"), "--engine",
                          "ray", "--model", TINY, "--precision", "fp32", "--workers", "2"], stderr=subprocess.PIPE,
                         text=True, env=ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: len(outputs(tmp_path / "out2")) >= 1, p)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and "Traceback" not in err, err
    assert settled(lambda: _ray_processes() <= before), "Ctrl-C left Ray processes behind"
    assert not list((tmp_path / "out2").glob(".*.part"))
    for f in (tmp_path / "out2").glob("*.dac"):
        container.read(f)
