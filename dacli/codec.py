"""From audio files to .dac files and back: every file goes through the window engine
(:mod:`dacli.windows`), one at a time or many together.

Encoding: a first streaming pass measures loudness (BS.1770), peak and bandwidth and gives the
header (:func:`plan_file`); a second pass resamples to the model rate and applies the gain
(:func:`model_input`), block by block into the engine, which packs the windows of the files under way
into rows of one shape. :class:`Tokenizer` encodes many files so, each handed to its sink once all its
windows are done (:class:`DacFiles`: a .dac file each, written atomically; or the shards of
:class:`dacli.dataset.ShardWriter`); :func:`encode_file` is the same with one file. Decoding runs the
windowed decoder, low-passes at the recorded bandwidth, resamples back and writes (:func:`decode_file`,
:func:`decode_codes` for codes that come without a .dac file).

torch and the model's classes are imported inside the functions that run the model, so that the
command line can read this module's defaults without starting torch.
"""

import math
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union

import numpy as np

from . import audio, container, dataset, legacy, windows
from .bandwidth import BandwidthMeter, LowPass
from .errors import DacliError
from .outcome import INPUT_ERRORS, Outcome
from .rates import Bitrate
from .registry import bundled_version, describe_weights

if TYPE_CHECKING:
    from .model import DAC

Progress = Optional[Callable[[float], None]]  # called with the seconds of audio just done

TARGET_LOUDNESS = -16.0


def measure(path: container.PathLike, model_rate: int) -> Tuple[int, int, int, int, float, float, int]:
    """First pass: (sample rate, channels, input length, model-rate length, loudness, model-rate peak,
    bandwidth at the model rate in Hz, 0 for full band)."""
    info = audio.info(path)
    if not container.MIN_SAMPLE_RATE <= info.samplerate <= container.MAX_SAMPLE_RATE:
        raise DacliError(f"{path}: sample rate {info.samplerate} Hz is outside what dacli resamples "
                         f"({container.MIN_SAMPLE_RATE}-{container.MAX_SAMPLE_RATE} Hz)")
    if not 1 <= info.channels <= container.MAX_CHANNELS:
        raise DacliError(f"{path}: {info.channels} channels (at most {container.MAX_CHANNELS})")
    meter = audio.LoudnessMeter(model_rate, info.channels)
    band = BandwidthMeter(model_rate, info.channels)
    n_in, n_model, peak = [0], 0, 0.0
    for y in audio.resampled(audio.counted(audio.read_blocks(path), n_in), info.samplerate, model_rate, info.channels):
        meter.feed(y)
        band.feed(y)
        n_model += len(y)
        peak = max(peak, float(np.abs(y).max()))
    if n_in[0] == 0:
        raise DacliError(f"{path}: the file holds no audio")
    return info.samplerate, info.channels, n_in[0], n_model, meter.result(), peak, band.result()


def check_bandwidth(bandwidth: Union[str, int], model_rate: int) -> Union[str, int]:
    """``bandwidth`` as :func:`encode_file` takes it: "auto", "full", or Hz up to
    :func:`container.max_bandwidth`."""
    if bandwidth in ("auto", "full"):
        return bandwidth
    try:
        hz = int(bandwidth)
    except (TypeError, ValueError):
        hz = 0
    if not 1 <= hz <= container.max_bandwidth(model_rate) or str(hz) != str(bandwidth).strip():
        raise DacliError(f"bandwidth {bandwidth!r}: give auto, full, or a whole number of Hz from 1 to "
                         f"{container.max_bandwidth(model_rate)} (the model codes at {model_rate} Hz)")
    return hz


def plan_file(model: "DAC", src: container.PathLike, n_codebooks: Union[int, Bitrate],
              bandwidth: Union[str, int] = "auto") -> container.Header:
    """The first pass over an input: the header its .dac file will have (loudness, gain, bandwidth,
    lengths; the codebooks, or the :class:`~dacli.rates.Bitrate` that gives them for the file's
    channel count, and ``bandwidth`` checked by the caller)."""
    rate, channels, n_in, n_model, loud, peak, measured = measure(src, model.sample_rate)
    if isinstance(n_codebooks, Bitrate):
        try:
            n_codebooks = n_codebooks.codebooks(channels)
        except DacliError as e:
            raise DacliError(f"{src}: {e}") from None
    if bandwidth == "auto":
        bandwidth_hz = measured if measured <= container.max_bandwidth(model.sample_rate) else 0
    else:
        bandwidth_hz = 0 if bandwidth == "full" else int(bandwidth)
    gain_db = TARGET_LOUDNESS - loud
    if peak * audio.db_to_gain(gain_db) > 1.0:  # peak-limit: one gain for all channels, recorded
        gain_db = -20 * math.log10(peak)
    if not abs(gain_db) <= container.MAX_GAIN_DB:
        raise DacliError(f"{src}: the audio's level is out of range (peak {peak:.3g})")
    return container.Header(
        model_sample_rate=model.sample_rate, hop_length=model.hop_length, original_sample_rate=rate,
        channels=channels, n_codebooks=n_codebooks, bits_per_code=int(round(model.bits_per_code)),
        original_length=n_in, model_length=n_model, n_frames=math.ceil(n_model / model.hop_length),
        input_loudness=loud, gain_db=gain_db, model_hash=bytes.fromhex(model.weights_hash),
        model_name=model.name or "", bandwidth_hz=bandwidth_hz)


def model_input(src: container.PathLike, header: container.Header) -> Iterator[np.ndarray]:
    """The second pass: the input at the model rate with the header's gain applied, as (channels, n)
    float32 blocks; refuses a file that changed since :func:`plan_file` read it."""
    g = np.float32(audio.db_to_gain(header.gain_db))
    n_seen, n_model = [0], 0
    for y in audio.resampled(audio.counted(audio.read_blocks(src), n_seen), header.original_sample_rate,
                             header.model_sample_rate, header.channels):
        n_model += len(y)
        if n_model > header.model_length:
            raise DacliError(f"{src}: the file changed while it was being read")
        yield y.T * g
    if n_seen[0] != header.original_length or n_model != header.model_length:
        raise DacliError(f"{src}: the file changed while it was being read "
                         f"({header.original_length} then {n_seen[0]} samples)")


class Tokenizer:
    """Encodes audio files into .dac files through the window engine, the windows of every file under
    way packed together: ``submit`` each (input, output) pair, then ``finish``; both return the
    :class:`~dacli.outcome.Outcome` of each file completed meanwhile, in no particular order. Each
    output is written atomically once all its windows are done. A file that fails (unreadable, corrupt,
    changed while read, a full disk) fails alone (:data:`~dacli.outcome.INPUT_ERRORS`); anything else,
    a failing model included, propagates and stops the run."""

    def __init__(self, model: "DAC", n_codebooks: Union[None, int, Bitrate] = None,
                 window_seconds: Optional[float] = None, bandwidth: Union[str, int] = "auto",
                 rows: Optional[int] = None, sink: Optional["Sink"] = None) -> None:
        self.model, self.sink = model, sink or DacFiles()
        audio.LoudnessMeter.load()  # now rather than in the middle of the first file
        # a Bitrate gives each file its count by its channels: the engine computes the most any file
        # gets and each file keeps its first ones (RVQ codes of fewer codebooks are a prefix)
        self.n_codebooks = n_codebooks if isinstance(n_codebooks, Bitrate) else model.check_n_codebooks(n_codebooks)
        most = self.n_codebooks.most if isinstance(self.n_codebooks, Bitrate) else self.n_codebooks
        self.bandwidth = check_bandwidth(bandwidth, model.sample_rate)
        width = windows.window_frames(model, window_seconds, windows.ENCODE_WINDOW_SECONDS)
        self.packer = windows.Packer(model, most, width, rows or windows.default_rows(model.device))
        self._waiting: Dict[int, Tuple[container.PathLike, container.PathLike, container.Header]] = {}
        self._count = 0

    def submit(self, src: container.PathLike, dst: container.PathLike, progress: Progress = None) -> List[Outcome]:
        """Encode ``src`` into ``dst`` (``progress`` follows its audio) → the outcomes of the files
        completed meanwhile (``src``'s own among them if it failed, or if its last windows have run)."""
        key, self._count = self._count, self._count + 1
        try:
            header = plan_file(self.model, src, self.n_codebooks, self.bandwidth)
        except INPUT_ERRORS as e:
            return [Outcome.failed(src, dst, e)]
        self._waiting[key] = (src, dst, header)
        self.packer.open(key, header.channels, header.model_length)
        done = []
        try:
            for y in model_input(src, header):
                done += self.packer.feed(key, y)
                if progress:
                    progress(y.shape[1] / self.model.sample_rate)
            done += self.packer.feed(key, np.zeros((header.channels, 0), np.float32), last=True)
        except INPUT_ERRORS as e:
            self.packer.drop(key)
            del self._waiting[key]
            return self._written(done) + [Outcome.failed(src, dst, e)]
        return self._written(done)

    def finish(self) -> List[Outcome]:
        """Encode what is still in the engine and close the sink → the outcomes of those files."""
        return self._written(self.packer.flush()) + self.sink.close()

    def _written(self, done: windows.Done) -> List[Outcome]:
        out = []
        for key, codes in done:
            src, dst, header = self._waiting.pop(key)  # type: ignore[call-overload]
            out += self.sink.put(src, dst, header, np.ascontiguousarray(codes[:, :header.n_codebooks]))
        return out


class Sink(Protocol):
    """Where a :class:`Tokenizer` puts each encoded file: ``put`` and ``close`` return the outcomes of
    the files they have written (a sink may hold files and write them together)."""

    def put(self, src: Any, dst: Any, header: container.Header, codes: np.ndarray) -> List[Outcome]: ...

    def close(self) -> List[Outcome]: ...


class DacFiles:
    """The default sink: each file as its own .dac container at ``dst``, written atomically."""

    def put(self, src: Any, dst: Any, header: container.Header, codes: np.ndarray) -> List[Outcome]:
        try:
            container.write(dst, header, codes)
        except INPUT_ERRORS as e:
            return [Outcome.failed(src, dst, e)]
        return [Outcome.done(src, dst, header)]

    def close(self) -> List[Outcome]:
        return []


def encode_file(model: "DAC", src: container.PathLike, dst: container.PathLike,
                n_codebooks: Union[None, int, Bitrate] = None,
                window_seconds: Optional[float] = None, progress: Progress = None,
                bandwidth: Union[str, int] = "auto") -> container.Header:
    """Encode an audio file into a .dac container (atomically), streaming it window by window.
    ``progress(seconds)`` is called as audio is encoded. ``bandwidth``: "auto" records where the
    input's spectrum ends, if it ends well below Nyquist, so that decoding low-passes there; "full"
    records none; a number of Hz records that. Returns the header written; raises what failed the
    file. Many files at once: :class:`Tokenizer`."""
    tokenizer = Tokenizer(model, n_codebooks, window_seconds, bandwidth)
    (outcome,) = tokenizer.submit(src, dst, progress) + tokenizer.finish()
    if outcome.error is not None:
        raise outcome.error
    assert outcome.header is not None
    return outcome.header


def made_otherwise(dst: container.PathLike, model: Optional["DAC"], codebooks: Union[int, Bitrate]) -> Optional[str]:
    """How the existing .dac file ``dst`` differs from what ``model`` (None: any) would write there with
    ``codebooks`` (a count, or the :class:`~dacli.rates.Bitrate` that gives it for the file's channels):
    "exists with 9 codebooks, asked 3"; None when it is what this run would make."""
    try:
        h = container.read_header(dst)
    except DacliError:
        return "exists but is not a .dac file of dacli's"
    if model is not None and h.model_hash.hex() != model.weights_hash:
        return (f"exists, made with model {h.model_name!r} ({h.model_hash.hex()[:12]}), asked {model.name!r} "
                f"({model.weights_hash[:12]})")
    if isinstance(codebooks, Bitrate):
        why = codebooks.mismatch(h.channels, h.n_codebooks)
    else:
        why = f"with {h.n_codebooks} codebooks, asked {codebooks}" if h.n_codebooks != codebooks else None
    return f"exists {why}" if why else None


def describe_file(path: container.PathLike) -> dict:
    """What ``dacli info`` shows of a .dac file, ours or the official tool's, or of a token dataset."""
    if dataset.is_dataset(path):
        return dataset.describe(path)
    return legacy.describe(path) if legacy.is_legacy(path) else container.describe(path)


def duration(path: container.PathLike) -> float:
    """Seconds of audio in an audio file or one of our .dac files, for progress (0 when unknown)."""
    try:
        if str(path).lower().endswith(".dac") and not legacy.is_legacy(path):
            return container.read_header(path).duration
        i = audio.info(path)
        return i.frames / i.samplerate if i.samplerate else 0.0
    except DacliError:
        return 0.0


def check_model(model: "DAC", header: container.Header, path: container.PathLike) -> None:
    """Refuse a file that this model cannot decode: other weights, rates, codebook size or count."""
    if model.weights_hash != header.model_hash.hex():
        earlier = bundled_version(header.model_hash.hex())
        if earlier is not None:  # an earlier (or later) version of the bundled model
            raise DacliError(f"{path}: made with {describe_weights(earlier)}; "
                             f"this model is {model.name}")
        raise DacliError(f"{path}: encoded with model {header.model_name!r} (weights {header.model_hash.hex()[:12]}), "
                         f"not with {model.name!r} ({model.weights_hash[:12]}); decode with --model pointing at it")
    if model.sample_rate != header.model_sample_rate or model.hop_length != header.hop_length:
        raise DacliError(f"{path}: model rates do not match the file")
    if 2 ** header.bits_per_code != model.codebook_size or header.n_codebooks > model.n_codebooks:
        raise DacliError(f"{path}: {header.n_codebooks} codebooks of {2 ** header.bits_per_code} codes do not fit "
                         f"the model's {model.n_codebooks} of {model.codebook_size}")


def decode_file(model: "DAC", src: container.PathLike, dst: Union[container.PathLike, BinaryIO], fmt: str = "wav",
                window_seconds: Optional[float] = None,
                progress: Progress = None) -> Union[container.Header, "legacy.LegacyFile"]:
    """Decode a .dac container (ours or the official tool's) to an audio file, atomically, or to a
    binary stream such as stdout as WAV, streamed window by window (on an error the stream stops short).
    Low-passed at the bandwidth the file records, if any (docs/FORMAT.md, "Decoding")."""
    if legacy.is_legacy(src):
        return legacy.decode_file(model, src, dst, fmt)
    header, codes = container.read(src)
    check_model(model, header, src)
    decode_codes(model, header, codes, dst, fmt, window_seconds, progress)
    return header


def decode_codes(model: "DAC", header: container.Header, codes: np.ndarray, dst: Union[container.PathLike, BinaryIO],
                 fmt: str = "wav", window_seconds: Optional[float] = None, progress: Progress = None) -> None:
    """Decode codes with the header that describes them (checked against ``model`` by the caller) to
    an audio file or stream, as :func:`decode_file` does for a .dac file: a dataset's row, an LM's
    array with :func:`dacli.tokens.synthetic_header`."""
    blocks = model_rate_audio(model, header, codes, window_seconds)
    blocks = audio.resampled(blocks, header.model_sample_rate, header.original_sample_rate, header.channels)
    audio.write_audio(dst, blocks, header.original_sample_rate, header.channels, header.original_length, fmt,
                      progress)


def model_rate_audio(model: "DAC", header: container.Header, codes: np.ndarray,
                     window_seconds: Optional[float] = None) -> Iterator[np.ndarray]:
    """Steps 1-3 of docs/FORMAT.md, "Decoding": the windowed decode of the codes, cut to model_length,
    gain restored and low-passed at the recorded bandwidth → (samples, channels) float32 blocks at the
    model rate, in order (what :func:`decode_codes` resamples; what the browser player plays)."""
    g = np.float32(audio.db_to_gain(-header.gain_db))

    def model_rate():
        done = 0
        for y in windows.decode_windows(model, codes, window_seconds):
            y = y[:, :header.model_length - done]
            done += y.shape[1]
            yield (y * g).T
        if done < header.model_length:  # odd-stride models give a few samples fewer
            yield np.zeros((header.model_length - done, header.channels), np.float32)

    def band_limited(blocks):
        lowpass = LowPass(header.bandwidth_hz, header.model_sample_rate, header.channels)
        for y in blocks:
            yield lowpass.feed(y)
        yield lowpass.feed(np.zeros((0, header.channels), np.float32), last=True)

    return band_limited(model_rate()) if header.bandwidth_hz else model_rate()
