"""The player's decoding speed in headless Chromium: one .dac file decoded by the page served cross-origin
isolated (as ``make web-serve`` serves it: WASM threads) and served plainly (one thread), taking turns,
in the same run; real time factors and the ratio, and how soon a file opened as a user opens it plays.

    python benchmarks/web_player.py [--seconds 60] [--channels 2] [--n-codebooks 3] [--runs 2]

Needs ``make web`` and Debian's chromium (``make web-deps``). The servers listen on 127.0.0.1 and stop
with the script.
"""

import argparse
import http.server
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from dacli import bench

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"


def serve(isolated: bool):
    spec = importlib.util.spec_from_file_location("serve", WEB / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.Handler if isolated else type("Plain", (module.Handler,), {
        "end_headers": http.server.SimpleHTTPRequestHandler.end_headers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(WEB)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--n-codebooks", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = {"machine": bench.machine(), "runs": []}
    print(f"machine: {bench.describe_machine(results['machine'])}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, sr = sf.read(ROOT / "tests" / "fixtures" / "music20s.flac", dtype="float32", always_2d=True)
        x = np.tile(x[:, :1], (int(np.ceil(args.seconds * sr / len(x))), args.channels))[:int(args.seconds * sr)]
        for c in range(1, args.channels):
            x[:, c] = 0.8 * np.roll(x[:, c], c * sr // 10)
        sf.write(tmp / "in.wav", x, sr)
        subprocess.run([sys.executable, "-m", "dacli", "encode", tmp / "in.wav", "-o", tmp / "x.dac", "-q",
                        "--n-codebooks", str(args.n_codebooks)], check=True)
        data = list((tmp / "x.dac").read_bytes())
        from playwright.sync_api import sync_playwright
        servers = {"threads": serve(True), "one thread": serve(False)}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
                for run in range(args.runs):
                    for name, server in servers.items():
                        page = browser.new_page()
                        page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                        page.evaluate("window.dacli.ready")
                        r = page.evaluate("async (b) => { const r = await window.dacli.decode(new Uint8Array(b), true);"
                                          " return {seconds: r.seconds, threads: window.dacli.threads,"
                                          " first: window.dacli.playback.log.find((e) => e.playing)}; }", data)
                        r.update(run=run, serving=name, realtime=args.seconds / r["seconds"])
                        results["runs"].append(r)
                        print(f"run {run + 1}, {name} ({r['threads']}): {args.seconds:g} s of {args.channels} channels, "
                              f"{args.n_codebooks} codebooks, decoded in {r['seconds']:.2f} s ({r['realtime']:.2f}× real "
                              f"time); playing at {r['first']['fraction']:.1%} decoded, {r['first']['ms'] / 1000:.2f} s in",
                              flush=True)
                        page.close()
                browser.close()
        finally:
            for server in servers.values():
                server.shutdown()
                server.server_close()
    best = {n: min(r["seconds"] for r in results["runs"] if r["serving"] == n) for n in servers}
    print(f"threads against one thread (best of {args.runs}): {best['one thread'] / best['threads']:.2f}× faster")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
