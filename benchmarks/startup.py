"""How long the light commands take, whole process, median of 5 (target: under 0.3 s each), and which
imports cost the most in the slowest one. Also checks that none of them imports torch or scipy.

    python benchmarks/startup.py
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DACLI = [sys.executable, "-m", "dacli"]


def main():
    from dacli import container
    tmp = Path(tempfile.mkdtemp())
    h = container.Header(44100, 512, 44100, 1, 9, 10, 44100, 44100, 87, -20.0, 4.0, bytes(32), "x")
    container.write(tmp / "x.dac", h, np.zeros((1, 9, 87), np.int64))
    commands = {"--help": ["--help"], "--version": ["--version"], "info": ["info", str(tmp / "x.dac")],
                "models": ["models"],
                "transcode": ["transcode", str(tmp / "x.dac"), "-o", str(tmp / "y.dac"), "--kbps", "3",
                              "--overwrite"]}
    from dacli import bench
    print(bench.describe_machine(bench.machine()))
    times = {}
    for name, args in commands.items():
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(DACLI + args, capture_output=True, check=True)
            runs.append(time.perf_counter() - t)
        times[name] = statistics.median(runs)
        probe = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.argv = ['dacli'] + sys.argv[1:]; "
                                "exec('try:\\n runpy.run_module(\"dacli\", run_name=\"__main__\")\\nexcept SystemExit: pass'); "
                                "print(sorted(m for m in ('torch', 'scipy') if m in sys.modules), file=sys.stderr)",
                                *args], capture_output=True, text=True)
        heavy = probe.stderr.strip().splitlines()[-1]
        print(f"dacli {name:<10} {times[name]:.3f} s (median of 5)  heavy modules imported: {heavy}")
    slowest = max(times, key=times.get)
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "dacli", *commands[slowest]],
                       capture_output=True, text=True)
    rows = [ln.split("|") for ln in r.stderr.splitlines() if ln.startswith("import time:") and "self" not in ln]
    rows = sorted(rows, key=lambda r: -int(r[1]))[:12]
    print(f"\nslowest: dacli {slowest}; largest cumulative imports (µs):")
    for self_us, cum_us, name in ((r[0].split(":")[1].strip(), r[1].strip(), r[2].rstrip()) for r in rows):
        print(f"  {cum_us:>8} {name}")


if __name__ == "__main__":
    main()
