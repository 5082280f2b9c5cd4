"""Faults and hostile use through the real command line (subprocesses): batches that must not lose
work, signals, leftovers, file modes, names, FIFOs, full disks, bad numbers, hostile rates."""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dacli import container

from conftest import FIXTURES

pytestmark = pytest.mark.slow  # system tests (signals, full disks, processes): make test-quick leaves them out

TINY = str(FIXTURES / "tiny44.pth")


def dacli(*args, umask=None, limit_fsize=None, **kw):
    """Run the installed entry point (``python -m dacli``, the same main())."""
    def pre():
        if umask is not None:
            os.umask(umask)
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
    return subprocess.run([sys.executable, "-m", "dacli", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=pre, timeout=kw.pop("timeout", 300), **kw)


def one_line_error(r, *needles):
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert all(n in r.stderr for n in needles), r.stderr


def tone(path, seconds=1.0, rate=44100, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * channels, 1), rate)


def parts(folder):
    return sorted(p.name for p in Path(folder).rglob("*.part"))


def test_same_stem_inputs_get_distinct_outputs(tmp_path):
    """song.wav and song.flac: two outputs (the extension is kept where stems collide), both kept with
    --overwrite, neither skipped as "exists" by the run that wrote it."""
    src = tmp_path / "in"
    src.mkdir()
    tone(src / "song.wav")
    x, sr = sf.read(src / "song.wav")
    sf.write(src / "song.flac", x[::-1], sr)
    tone(src / "other.wav", 0.5)
    for extra in ([], ["--overwrite"]):
        r = dacli("encode", src, "-o", tmp_path / "out", "--model", TINY, *extra)
        assert r.returncode == 0, r.stderr
        assert "encoded 3 file(s), skipped 0, failed 0" in r.stderr
        assert sorted(p.name for p in (tmp_path / "out").glob("*.dac")) == ["other.dac", "song.flac.dac", "song.wav.dac"]
    a, b = container.read(tmp_path / "out/song.wav.dac")[1], container.read(tmp_path / "out/song.flac.dac")[1]
    assert not np.array_equal(a, b)
    r = dacli("decode", tmp_path / "out", "-o", tmp_path / "dec", "--model", TINY)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["other.wav", "song.flac.wav", "song.wav.wav"]
    r = dacli("encode", src, "-o", tmp_path / "out", "--model", TINY)  # a second run skips what exists
    assert "skipped 3" in r.stderr and r.returncode == 0


def _default_signals():
    """A test run started in the background (CI, nohup) ignores SIGINT, and its children inherit that;
    give the child the default disposition a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def long_dac(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    tone(d / "long.wav", 60)
    assert dacli("encode", d / "long.wav", "-o", d / "long.dac", "--model", TINY).returncode == 0
    return d / "long.dac"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signals_during_decode_leave_nothing(tmp_path, long_dac, sig, code):
    p = subprocess.Popen([sys.executable, "-m", "dacli", "decode", str(long_dac), "-o",
                          str(tmp_path / "long_dec.wav"), "--model", TINY, "--chunk-seconds", "0.2"],
                         stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    deadline = time.time() + 120
    while not parts(tmp_path) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert parts(tmp_path), "the decode never started writing"
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == code, err
    assert "Traceback" not in err and ("terminated by" in err or "interrupted" in err), err
    assert parts(tmp_path) == [] and not (tmp_path / "long_dec.wav").exists()


def test_interrupt_during_startup_prints_no_traceback(tmp_path):
    """Ctrl-C while the process starts (imports, loading the model) or just after: exit 130, one line.
    The input is long enough (5 minutes in 0.2 s windows) that no run can finish before the signal."""
    tone(tmp_path / "a.wav", 300)
    for delay in (0.3, 1.0):
        p = subprocess.Popen([sys.executable, "-m", "dacli", "encode", str(tmp_path / "a.wav"), "--model", TINY,
                              "--chunk-seconds", "0.2"], stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=60)[1]
        assert p.returncode == 130 and "Traceback" not in err, (p.returncode, err)
        assert not (tmp_path / "a.dac").exists() and parts(tmp_path) == []


@pytest.mark.parametrize("where", ["make_context", "invoke"])
@pytest.mark.parametrize("raised, code, line", [("KeyboardInterrupt()", 130, "dacli: error: interrupted"),
                                                ("Terminated(signal.SIGTERM)", 143, "dacli: error: terminated by SIGTERM")])
def test_interrupt_while_click_parses_is_reported_like_any_other(where, raised, code, line):
    """A signal that arrives during the last C call of an import is handled at the next Python
    instruction, which can be inside click, before or around the command: still one line and the
    signal's exit status, never click's "Aborted!" with exit 1. Deterministic: the interrupt is raised
    from click's own make_context / the group's invoke."""
    prog = ("import signal, sys\nimport click\nfrom dacli.errors import Terminated\n"
            f"def hit(*a, **k):\n    raise {raised}\n"
            f"setattr(click.Group, {where!r}, hit)\n"
            "sys.argv = ['dacli', 'models']\nfrom dacli.__main__ import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr.strip()) == (code, line), r.stderr


@pytest.mark.parametrize("raised, code, line", [("KeyboardInterrupt()", 130, "dacli: error: interrupted"),
                                                ("Terminated(signal.SIGTERM)", 143, "dacli: error: terminated by SIGTERM")])
def test_interrupt_wrapped_by_an_import_is_reported_like_any_other(raised, code, line):
    """An interrupt that lands in a dataclass field's __set_name__ while a module is imported (seen in
    torch's start-up) comes out as a RuntimeError caused by it: still one line and its exit status."""
    prog = ("import signal, sys\nimport click\nfrom dacli.errors import Terminated\n"
            "def hit(*a, **k):\n    try:\n"
            f"        raise {raised}\n"
            "    except KeyboardInterrupt as e:\n        raise RuntimeError('Error calling __set_name__') from e\n"
            "setattr(click.Group, 'invoke', hit)\n"
            "sys.argv = ['dacli', 'models']\nfrom dacli.__main__ import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr.strip()) == (code, line), r.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_during_encode_leave_nothing(tmp_path, sig, code):
    """A signal while the model is encoding: the exit status says which, one line, no output file."""
    tone(tmp_path / "long.wav", 300)
    p = subprocess.Popen([sys.executable, "-m", "dacli", "encode", str(tmp_path / "long.wav"), "--model", TINY,
                          "--chunk-seconds", "0.2"], stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    line = p.stderr.readline()  # "model ...: N of M codebooks", printed once the model is loaded
    assert line.startswith("model "), line
    time.sleep(0.5)
    assert p.poll() is None, "the encode finished before the signal"
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == code and "Traceback" not in err, (p.returncode, err)
    assert not (tmp_path / "long.dac").exists() and parts(tmp_path) == []


def test_signal_during_a_batch_keeps_the_finished_files(tmp_path):
    """SIGTERM in the middle of a folder: the files finished before it are complete, the one being
    written is gone, and the next run encodes only what is missing."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        tone(src / f"f{i}.wav", 40)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "dacli", "encode", str(src), "-o", str(out), "--model", TINY,
                          "--chunk-seconds", "0.2"], stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    deadline = time.time() + 120
    while not (out / "f1.dac").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert (out / "f1.dac").exists() and p.poll() is None, "the batch ended before the signal"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143 and "Traceback" not in err, (p.returncode, err)
    done = sorted(f.name for f in out.iterdir())
    assert parts(out) == [] and 2 <= len(done) < 6, done
    for f in done:
        assert container.read(out / f)[0].original_length == 40 * 44100  # complete, CRCs checked
    r = dacli("encode", src, "-o", out, "--model", TINY)
    assert r.returncode == 0 and f"encoded {6 - len(done)} file(s), skipped {len(done)}, failed 0" in r.stderr, r.stderr


def test_output_names_are_chosen_before_sharding(tmp_path):
    """song.wav and song.flac in different shards of a job array: each job still names its output as a
    run over all the files would (song.wav.dac, song.flac.dac), so two jobs never write one name."""
    import zlib
    src = tmp_path / "in"
    src.mkdir()
    tone(src / "song.wav")
    tone(src / "song.flac", 0.5)
    n = next(n for n in range(2, 50) if zlib.crc32(b"song.wav") % n != zlib.crc32(b"song.flac") % n)
    names = []
    for k in range(1, n + 1):
        r = dacli("encode", src, "-o", tmp_path / f"out{k}", "--model", TINY, "--shard", f"{k}/{n}")
        if (tmp_path / f"out{k}").exists():
            names += sorted(f.name for f in (tmp_path / f"out{k}").glob("*.dac"))
        else:
            assert r.returncode == 1 and "no input files" in r.stderr, r.stderr
    assert sorted(names) == ["song.flac.dac", "song.wav.dac"]


def test_stale_parts_of_killed_runs_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    tone(tmp_path / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a.dac.{dead.pid}.0123abcd.part"
    stale.write_bytes(b"x" * 1000)
    live = out / f".a.dac.{os.getpid()}.0123abcd.part"  # a live writer's file stays
    live.write_bytes(b"x")
    r = dacli("encode", tmp_path / "a.wav", "-o", out / "a.dac", "--model", TINY)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists()
    stale.write_bytes(b"x")  # also when the output exists and is skipped
    assert dacli("encode", tmp_path / "a.wav", "-o", out / "a.dac", "--model", TINY).returncode == 0
    assert not stale.exists()


def test_sigkill_in_a_batch_decode_then_rerun_completes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        tone(src / f"t{i}.wav", 8)
    assert dacli("encode", src, "-o", tmp_path / "codes", "--model", TINY).returncode == 0
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "dacli", "decode", str(tmp_path / "codes"), "-o", str(out),
                          "--model", TINY, "--chunk-seconds", "0.2"], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out.exists() and parts(out)):
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.02)
    p.kill()
    p.wait()
    assert parts(out)  # killed mid-file: its temporary file is left
    r = dacli("decode", tmp_path / "codes", "-o", out, "--model", TINY)
    assert r.returncode == 0, r.stderr
    assert parts(out) == []
    assert sorted(f.name for f in out.glob("*.wav")) == [f"t{i}.wav" for i in range(4)]
    for f in out.glob("*.wav"):
        assert sf.info(str(f)).frames == 8 * 44100


def test_concurrent_batches_on_one_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        tone(src / f"t{i}.wav", 2)
    cmd = [sys.executable, "-m", "dacli", "encode", str(src), "-o", str(tmp_path / "out"), "--model", TINY, "-q"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert parts(tmp_path) == []
    ref = dacli("encode", src, "-o", tmp_path / "ref", "--model", TINY, "-q")
    assert ref.returncode == 0
    for f in sorted((tmp_path / "ref").glob("*.dac")):
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    tone(tmp_path / "a.wav")
    assert dacli("encode", tmp_path / "a.wav", "--model", TINY, umask=umask).returncode == 0
    assert dacli("decode", tmp_path / "a.dac", "-o", tmp_path / "b.flac", "--model", TINY, umask=umask).returncode == 0
    assert (tmp_path / "a.dac").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.flac").stat().st_mode & 0o777 == mode


def test_output_names(tmp_path):
    tone(tmp_path / "a.wav")
    # an audio suffix for encode's single output: refused, and no folder of that name appears
    r = dacli("encode", tmp_path / "a.wav", "-o", tmp_path / "x.wav", "--model", TINY)
    one_line_error(r, "x.wav", "writes .dac files")
    assert not (tmp_path / "x.wav").exists()
    tone(tmp_path / "b.wav")
    r = dacli("encode", tmp_path / "a.wav", tmp_path / "b.wav", "-o", tmp_path / "y.dac", "--model", TINY)
    one_line_error(r, "several inputs", "folder")
    assert not (tmp_path / "y.dac").exists()
    # names up to the file system's limit (the temporary name is longer than the final one)
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long = "n" * (limit - 4) + ".dac"
    r = dacli("encode", tmp_path / "a.wav", "-o", tmp_path / long, "--model", TINY)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / long).exists() and parts(tmp_path) == []
    r = dacli("decode", tmp_path / long, "-o", tmp_path / ("m" * (limit - 4) + ".wav"), "--model", TINY)
    assert r.returncode == 0, r.stderr


def test_fifo_and_device_inputs_are_refused(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    one_line_error(dacli("encode", fifo, "--model", TINY, timeout=60), "not a regular file")
    os.rename(fifo, tmp_path / "pipe.dac")
    one_line_error(dacli("info", tmp_path / "pipe.dac", timeout=60), "not a regular file")
    one_line_error(dacli("decode", tmp_path / "pipe.dac", "--model", TINY, timeout=60), "not a regular file")
    one_line_error(dacli("info", "/dev/null", timeout=60), "not a regular file")


@pytest.mark.parametrize("args, needle", [
    (["info", "missing.dac"], "missing.dac: no such file"),
    (["encode", "a.wav", "--kbps", "nan"], "--kbps"),
    (["encode", "a.wav", "--kbps", "0"], "above zero"),
    (["encode", "a.wav", "--kbps", "-5"], "above zero"),
    (["encode", "a.wav", "--n-codebooks", "0"], "above zero"),
    (["encode", "a.wav", "--chunk-seconds", "inf"], "above zero"),
    (["transcode", "a.dac", "-o", "b.dac", "--kbps", "nan"], "above zero"),
])
def test_bad_numbers_and_missing_files(tmp_path, args, needle):
    tone(tmp_path / "a.wav")
    one_line_error(dacli(*args, cwd=tmp_path), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_hostile_sample_rates_are_refused_before_allocating(tmp_path):
    sf.write(tmp_path / "slow.wav", np.zeros(30), 3)
    r = dacli("encode", tmp_path / "slow.wav", "--model", TINY, timeout=60)
    one_line_error(r, "sample rate 3 Hz", "1000-768000")
    assert not (tmp_path / "slow.dac").exists()


def _mounted_tmpfs(path, size):
    """A tmpfs of ``size`` at ``path``: the test needs root and mount(8), and fails saying so without."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"this test mounts a small tmpfs (as root): mount failed: {r.stderr.strip()}"


def test_full_disk_says_so(tmp_path):
    """On a full file system (a small tmpfs), and past the file-size limit, decode and encode fail with
    one line and leave nothing behind."""
    tone(tmp_path / "a.wav", 30)
    assert dacli("encode", tmp_path / "a.wav", "--model", TINY).returncode == 0
    r = dacli("decode", tmp_path / "a.dac", "-o", tmp_path / "big" / "a.wav", "--model", TINY,
              limit_fsize=256 * 1024)
    one_line_error(r, "a.wav: cannot write", "file too large")
    assert list((tmp_path / "big").iterdir()) == []
    small = tmp_path / "small"
    _mounted_tmpfs(small, "256k")
    try:
        r = dacli("decode", tmp_path / "a.dac", "-o", small / "a.wav", "--model", TINY)
        one_line_error(r, "a.wav: cannot write", "no space left on device")
        assert list(small.iterdir()) == []
        (small / "filler").write_bytes(bytes(250 * 1024))
        r = dacli("encode", tmp_path / "a.wav", "-o", small / "a.dac", "--model", TINY)
        one_line_error(r, "a.dac: cannot write (no space left on device)")
        assert sorted(p.name for p in small.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(small)])


def test_unwritable_places_say_so(tmp_path):
    tone(tmp_path / "a.wav")
    (tmp_path / "afile").write_text("x")
    r = dacli("encode", tmp_path / "a.wav", "-o", tmp_path / "afile" / "a.dac", "--model", TINY)
    one_line_error(r, "afile", "not a folder")
    ro = tmp_path / "ro"
    _mounted_tmpfs(ro, "64k")
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    try:
        r = dacli("encode", tmp_path / "a.wav", "-o", ro / "a.dac", "--model", TINY)
        one_line_error(r, "read-only file system")
    finally:
        subprocess.run(["umount", str(ro)])


def test_stale_part_removal_touches_only_that_outputs_files(tmp_path):
    """Cleaning up for a.dac leaves alone the temporary files of a.dac.5 or a.dac.wav (other outputs)."""
    from dacli.fileio import remove_stale_parts
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = tmp_path / f".a.dac.{dead.pid}.0123abcd.part"
    others = [tmp_path / f".a.dac.5.{os.getpid()}.0123abcd.part", tmp_path / f".a.dac.wav.{dead.pid}.0123abcd.part"]
    for f in [mine, *others]:
        f.write_bytes(b"x")
    remove_stale_parts(tmp_path / "a.dac")
    assert not mine.exists() and all(f.exists() for f in others)
