"""One phase of the official descript-audio-codec 1.0.0, file to file, as its CLI does it (run with the
official package's own Python; see benchmarks/speed.py and benchmarks/corpus.py). Prints one JSON line.

    python official_phase.py encode|decode SRC DST       one file
    python official_phase.py encode-files LIST DST_DIR   each file named in LIST (one per line), one model"""

import json
import resource
import sys
import time
import warnings

import scipy.signal
import torch


def fast_loudness_filter():
    """audiotools' loudness filter falls back to a per-sample Python loop when torchaudio's compiled
    kernels are missing (they are, beside a CPU torch): use scipy's lfilter, as a real build would."""
    import audiotools.core.loudness as loudness

    def lfilter(waveform, a_coeffs, b_coeffs, clamp=True, batching=True):
        y = scipy.signal.lfilter(b_coeffs.double().numpy(), a_coeffs.double().numpy(),
                                 waveform.detach().double().numpy(), axis=-1)
        y = torch.from_numpy(y).to(waveform.dtype)
        return y.clamp(-1, 1) if clamp else y

    class functional:
        pass

    functional.lfilter = staticmethod(lfilter)

    class torchaudio_stub:
        pass

    torchaudio_stub.functional = functional
    loudness.torchaudio = torchaudio_stub


def main(kind, src, dst, win_duration=5.0):
    warnings.filterwarnings("ignore")
    fast_loudness_filter()
    from audiotools import AudioSignal
    from dac import DACFile
    from dac.model import DAC

    torch.manual_seed(0)
    model = DAC().eval()  # the 44.1 kHz model's architecture, random weights
    with torch.inference_mode(), torch.no_grad():
        t = time.perf_counter()
        if kind == "encode":
            model.compress(AudioSignal(src), win_duration).save(dst)
        elif kind == "encode-files":  # the official CLI's loop: one model, file after file
            for i, f in enumerate(open(src).read().split("\n")):
                if f:
                    model.compress(AudioSignal(f), win_duration).save(f"{dst}/{i}.dac")
        else:
            model.decompress(DACFile.load(src)).write(dst)
        seconds = time.perf_counter() - t
    print(json.dumps({"phase": kind, "seconds": seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
