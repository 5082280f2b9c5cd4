"""Streaming speed, latency and the deviation of a short lookahead, against the one-pass model calls of
the same codes and audio in the same run.

    python benchmarks/streaming.py [--seconds 10] [--models dacli-44khz 44khz-8kbps] [--out FILE.json]
                                   [--streams 1 4 8 16 64] [--streams-only]

For each model (the bundled one, the full-size 44.1 kHz architecture with random weights) in the default
precision of this machine and in fp32: real audio (tests/fixtures/music20s.flac) encoded to codes;
``model.decode`` of them timed; then StreamDecoder with pushes of 1, 2, 4, 8 and 32 frames: throughput
as a share of the one-pass decode's, real-time factor, latency per push (p50, p99) against the audio
a push carries, time to first audio (each after a short stream of the same pushes); the same for
StreamEncoder (pushes of 1 … 32 frames of samples)
against ``model.encode``; and for the trained model, for every lookahead 0 … exact, the streamed
audio's deviation from the offline decode (SNR, max abs, mel distance). Also the one-pass decode and encode of the model before it
is made streamable, the price of streamability. Then the streams axis: N streams (``--streams``) of
different music decoded by one ``StreamDecoder(m, streams=N)``, every push carrying pushes of 1, 4 or 8
frames of all N: aggregate real-time factor (stream-seconds per second), push latency p50/p99 against
the audio a push carries, and the share of the one-pass throughput (``model.decode`` of the model as
loaded, timed twice beside the streams, taking turns), each the faster of two streamed runs.
``--streams-only`` runs just that axis. Run it on an idle machine.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dacli import bench, runtime
from dacli.metrics import mel_distance
from dacli.runtime import hardware
from dacli.stream import StreamDecoder, StreamEncoder, latency_frames

ROOT = Path(__file__).resolve().parent.parent
PUSHES = (1, 2, 4, 8, 32)
AXIS_PUSHES = (1, 4, 8)


def best(f, runs=3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def stream_times(make, pieces, runs=1, before=None):
    """(total seconds, per-push seconds, pushes until the first output) of the fastest of ``runs``
    streamed runs, after a stream of the first 40 pieces (the first push of each length in a process
    also finds the lengths its rows are computed in, dacli.runtime.convs.FastConv.stable_width);
    ``before()`` runs before each of them."""
    warm = make()
    for piece in pieces[:40]:
        warm.push(piece)
    warm.flush()
    best_run = None
    for _ in range(runs):
        if before is not None:
            before()
        stream, lat, first = make(), [], None
        t0 = time.perf_counter()
        for i, piece in enumerate(pieces):
            t = time.perf_counter()
            out = stream.push(piece)
            lat.append(time.perf_counter() - t)
            if first is None and (len(out) if isinstance(out, dict) else out.shape[-1]):
                first = i + 1
        stream.flush()
        run = (time.perf_counter() - t0, np.array(lat), first)
        best_run = run if best_run is None or run[0] < best_run[0] else best_run
    return best_run


def streams_axis(m, codes, seconds, streams):
    """Each N of ``streams``, each push size of AXIS_PUSHES: N streams (the codes rotated, so each
    stream plays other music) pushed together through one StreamDecoder; the shares against the one
    pass as loaded and as streamable (the latter timed once, first). The one pass as loaded and the
    streams take turns twice, each row's share the fastest streamed run against the faster of
    the two one passes timed beside them: the machine's speed drifts by 10 % and more within minutes."""
    rows, frame_ms, frames = [], 1e3 * m.hop_length / m.sample_rate, codes.shape[-1]
    with runtime.streaming(m):
        best(lambda: m.decode(codes), 2)  # a scope's first calls pack the weights for this shape
        streamable_pass, _ = best(lambda: m.decode(codes))
    for n_streams in streams:
        each = [np.roll(codes, 37 * k, -1) for k in range(n_streams)]
        for n in AXIS_PUSHES:
            pieces = [{k: c[:, :, t:t + n] for k, c in enumerate(each)} for t in range(0, frames, n)]
            beside: list = []
            total, lat, _ = stream_times(lambda: StreamDecoder(m, streams=n_streams), pieces, runs=2,
                                         before=lambda: beside.append(best(lambda: m.decode(codes), 1)[0]))
            rows.append({"streams": n_streams, "push_frames": n, "realtime": n_streams * seconds / total,
                         "one_pass_s": min(beside), "share_of_one_pass": n_streams * min(beside) / total,
                         "share_of_streamable_one_pass": n_streams * streamable_pass / total,
                         "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
                         "audio_per_push_ms": n * frame_ms})
    return rows


def run(name, precision, seconds, music, lookahead=True, streams=(), streams_only=False):
    m = bench.make_model(name, "cpu", precision)
    x = music[:int(seconds * m.sample_rate)][None]
    frame_ms = 1e3 * m.hop_length / m.sample_rate
    plain_dec, _ = best(lambda: m.decode(m.encode(x[:, :m.hop_length * 8])), 1)  # warm up
    codes = m.encode(x).numpy()
    plain_dec, plain_y = best(lambda: m.decode(codes))
    if streams_only:
        return {"model": name, "precision": m.precision, "seconds": seconds, "frame_ms": frame_ms,
                "decode_s_not_streamable": plain_dec, "streams": streams_axis(m, codes, seconds, streams)}
    plain_enc, _ = best(lambda: m.encode(x))
    stream_times(lambda: StreamDecoder(m), [codes[:, :, t:t + 8] for t in range(0, codes.shape[-1], 8)])
    after_dec, after_y = best(lambda: m.decode(codes))  # a stream that has ended leaves the model as it was
    runtime.streamable(m)
    off_dec, ref = best(lambda: m.decode(codes))
    off_enc, ref_codes = best(lambda: m.encode(x))
    ref = ref.numpy()
    frames = codes.shape[-1]
    row = {"model": name, "precision": m.precision, "seconds": seconds, "frame_ms": frame_ms,
           "latency_frames": latency_frames(m), "decode_s": off_dec, "encode_s": off_enc,
           "decode_s_not_streamable": plain_dec, "encode_s_not_streamable": plain_enc,
           "decode_s_after_a_stream": after_dec, "same_after_a_stream": bool(torch.equal(after_y, plain_y)),
           "decode": [], "encode": []}
    for n in PUSHES:
        total, lat, first = stream_times(lambda: StreamDecoder(m), [codes[:, :, t:t + n] for t in range(0, frames, n)])
        row["decode"].append({"push_frames": n, "share_of_offline": off_dec / total, "realtime": seconds / total,
                              "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
                              "audio_per_push_ms": n * frame_ms,
                              "first_audio_ms": first * n * frame_ms + 1e3 * float(lat[first - 1])})
        hop = m.hop_length * n
        total, lat, first = stream_times(lambda: StreamEncoder(m), [x[:, t:t + hop] for t in range(0, x.shape[-1], hop)])
        row["encode"].append({"push_frames": n, "share_of_offline": off_enc / total, "realtime": seconds / total,
                              "p50_ms": 1e3 * float(np.percentile(lat, 50)), "p99_ms": 1e3 * float(np.percentile(lat, 99)),
                              "audio_per_push_ms": n * frame_ms})
    row["lookahead"] = []
    for la in range(latency_frames(m) + 1) if lookahead else ():
        s = StreamDecoder(m, lookahead=la)
        y = np.concatenate([s.push(codes[:, :, t:t + 1]) for t in range(frames)] + [s.flush()], -1)
        err = y - ref
        mel = float(mel_distance(torch.from_numpy(ref), torch.from_numpy(y), m.sample_rate))
        snr = 10 * np.log10((ref ** 2).sum() / max((err ** 2).sum(), 1e-30))
        row["lookahead"].append({"frames": la, "ms": la * frame_ms, "snr_db": float(min(snr, 300.0)),
                                 "max_abs": float(np.abs(err).max()),
                                 "mel_distance": mel, "exact": bool((err == 0).all())})
    row["streams"] = streams_axis(m, codes, seconds, streams)
    return row


def show_streams(row):
    print(f"  streams (one pass as loaded: {row['decode_s_not_streamable']:.2f} s for {row['seconds']:g} s):")
    for r in row["streams"]:
        print(f"  {r['streams']:3d} streams, pushes of {r['push_frames']} frames: {r['realtime']:6.2f}x real time "
              f"in all, {r['share_of_one_pass']:.2f} of one pass ({r['one_pass_s']:.2f} s beside it; "
              f"{r['share_of_streamable_one_pass']:.2f} of the streamable one), "
              f"push p50 {r['p50_ms']:.1f} ms p99 "
              f"{r['p99_ms']:.1f} ms (audio per push {r['audio_per_push_ms']:.1f} ms)")


def show(row):
    print(f"\n{row['model']} ({row['precision']}), {row['seconds']:g} s of music, frame {row['frame_ms']:.1f} ms")
    if "decode" not in row:
        return show_streams(row)
    print(f"  exact latency {row['latency_frames']} frames")
    print(f"  one pass: decode {row['decode_s']:.2f} s, encode {row['encode_s']:.2f} s (before streamable: "
          f"{row['decode_s_not_streamable']:.2f} s, {row['encode_s_not_streamable']:.2f} s)")
    ratio = row['decode_s_after_a_stream'] / row['decode_s_not_streamable']
    print(f"  one pass before a stream {row['decode_s_not_streamable']:.2f} s, after it "
          f"{row['decode_s_after_a_stream']:.2f} s (ratio {ratio:.2f}), the same samples: {row['same_after_a_stream']}")
    for kind in ("decode", "encode"):
        for r in row[kind]:
            extra = f", first audio {r['first_audio_ms']:.0f} ms" if "first_audio_ms" in r else ""
            print(f"  {kind} pushes of {r['push_frames']:2d} frames: {r['share_of_offline']:.2f} of one pass, "
                  f"{r['realtime']:.2f}x real time, push p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms "
                  f"(audio per push {r['audio_per_push_ms']:.1f} ms){extra}")
    for r in row["lookahead"]:
        print(f"  lookahead {r['frames']:2d} ({r['ms']:5.1f} ms): SNR {r['snr_db']:6.1f} dB, max abs {r['max_abs']:.2e}, "
              f"mel distance {r['mel_distance']:.4f}{' (exact)' if r['exact'] else ''}")
    show_streams(row)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--models", nargs="+", default=["dacli-44khz", "44khz-8kbps"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-lookahead", nargs="*", default=["44khz-8kbps"], metavar="MODEL",
                    help="models without the lookahead table (random weights: their deviation means little)")
    ap.add_argument("--streams", nargs="*", type=int, default=[1, 4, 8, 16, 64], metavar="N",
                    help="stream counts of the streams axis (none: skip it)")
    ap.add_argument("--streams-only", action="store_true", help="only the one pass and the streams axis")
    args = ap.parse_args()
    machine = bench.machine()
    print("machine:", bench.describe_machine(machine))
    music, _ = sf.read(str(ROOT / "tests" / "fixtures" / "music20s.flac"), dtype="float32")
    music = music.mean(1) if music.ndim == 2 else music
    default = hardware.resolve_precision("auto", hardware.resolve_device("cpu"))
    rows = []
    for name in args.models:
        for precision in dict.fromkeys([default, "fp32"]):
            rows.append(run(name, precision, args.seconds, music, name not in args.no_lookahead,
                            args.streams, args.streams_only))
            show(rows[-1])
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
