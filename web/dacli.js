// The player's reader and decoder: the .dac container read as docs/FORMAT.md specifies it (every check of
// dacli/container.py, with the same reasons), and its codes decoded by the decoder's step graph of
// `dacli export` in onnxruntime-web, push by push as dacli.windows.decode_windows does (all channels in one
// call), gain restored and low-passed at the recorded bandwidth (FORMAT.md, "Decoding", steps 1-3: the
// audio at the model rate, before resampling), each stretch handed on as soon as it is final.

import { decompress } from "./vendor/fzstd.mjs";

const MAGIC = [0x89, 0x44, 0x41, 0x43, 0x0d, 0x0a, 0x1a, 0x0a];
const VERSION = 1;
const FIXED = 97; // bytes up to and including name_length
const BLOCK_HEAD = 9;
const MIN_SAMPLE_RATE = 1000, MAX_SAMPLE_RATE = 768000;
const MAX_CHANNELS = 1024, MAX_CODEBOOKS = 64, MAX_BITS_PER_CODE = 16;
const MAX_RAW_BLOCK = 1 << 24;
const MAX_LENGTH = 1n << 40n;
const MAX_GAIN_DB = 1000.0;
const MIN_BANDWIDTH_GAP_HZ = 1000;
const MAX_ZSTD_RATIO = 1 << 15;
export const MAX_SECONDS = 600; // audio the page decodes at most (per channel), to bound its memory

export class DacError extends Error {}

// ---- numbers as Python prints them (the reasons must read the same as dacli's) -----------------------

export function pyFloat(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, exp] = x.toExponential().split("e"); // shortest round-trip digits, as repr uses
  const e = parseInt(exp, 10);
  const digits = mant.replace("-", "").replace(".", "");
  const sign = x < 0 ? "-" : "";
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? digits[0] + "." + digits.slice(1) : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  const whole = digits.length <= e + 1 ? digits + "0".repeat(e + 1 - digits.length) : digits.slice(0, e + 1);
  const frac = digits.length > e + 1 ? digits.slice(e + 1) : "0";
  return `${sign}${whole}.${frac}`;
}

// ---- CRC32 (ISO-HDLC, zlib's) ----------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---- header ----------------------------------------------------------------------------------------

const ceilDiv = (a, b) => (a + b - 1n) / b; // BigInt, a >= 0

function rawBlockSize(h, frames) {
  return ceilDiv(BigInt(h.n_codebooks) * BigInt(h.channels) * BigInt(frames) * BigInt(h.bits_per_code), 8n);
}

function validate(h) {
  const bad = (m) => { throw new DacError(`invalid .dac header (${m})`); };
  const inRate = (r) => MIN_SAMPLE_RATE <= r && r <= MAX_SAMPLE_RATE;
  if (!(inRate(h.model_sample_rate) && inRate(h.original_sample_rate)))
    bad(`sample rates ${h.model_sample_rate} / ${h.original_sample_rate} Hz outside ${MIN_SAMPLE_RATE}-${MAX_SAMPLE_RATE}`);
  if (!(1 <= h.hop_length && h.hop_length <= h.model_sample_rate))
    bad(`hop length ${h.hop_length} outside 1-${h.model_sample_rate}`);
  if (!(1 <= h.channels && h.channels <= MAX_CHANNELS)) bad(`${h.channels} channels, outside 1-${MAX_CHANNELS}`);
  if (!(1 <= h.n_codebooks && h.n_codebooks <= MAX_CODEBOOKS))
    bad(`${h.n_codebooks} codebooks, outside 1-${MAX_CODEBOOKS}`);
  if (!(1 <= h.bits_per_code && h.bits_per_code <= MAX_BITS_PER_CODE))
    bad(`${h.bits_per_code} bits per code, outside 1-${MAX_BITS_PER_CODE}`);
  if (h.frames_per_block < 1 || rawBlockSize(h, h.frames_per_block) > BigInt(MAX_RAW_BLOCK))
    bad(`${h.frames_per_block} frames per block: a block must hold 1 frame to ${MAX_RAW_BLOCK} raw bytes`);
  if (!(1n <= h.original_length && h.original_length <= MAX_LENGTH))
    bad(`original length ${h.original_length} outside 1-${MAX_LENGTH}`);
  const osr = BigInt(h.original_sample_rate), msr = BigInt(h.model_sample_rate);
  let diff = h.model_length * osr - h.original_length * msr;
  if (diff < 0n) diff = -diff;
  if (diff > osr)
    bad(`model length ${h.model_length} does not match original length ${h.original_length} at ` +
        `${h.original_sample_rate} → ${h.model_sample_rate} Hz`);
  if (h.n_frames !== ceilDiv(h.model_length, BigInt(h.hop_length)))
    bad(`${h.n_frames} frames for ${h.model_length} samples at hop ${h.hop_length}`);
  if (!(Number.isFinite(h.gain_db) && Math.abs(h.gain_db) <= MAX_GAIN_DB))
    bad(`gain ${pyFloat(h.gain_db)} dB is not a finite number within ±${pyFloat(MAX_GAIN_DB)}`);
  if (!Number.isFinite(h.input_loudness)) bad(`input loudness ${pyFloat(h.input_loudness)} is not a finite number`);
  const maxBw = Math.floor(h.model_sample_rate / 2) - MIN_BANDWIDTH_GAP_HZ;
  if (h.bandwidth_hz && !(1 <= h.bandwidth_hz && h.bandwidth_hz <= maxBw))
    bad(`bandwidth ${h.bandwidth_hz} Hz is not 0 or within 1-${maxBw}`);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function parseHeader(buf) {
  const bytes = new Uint8Array(buf);
  if (bytes.length < MAGIC.length || MAGIC.some((m, i) => bytes[i] !== m))
    throw new DacError("not a .dac file (unknown magic bytes)");
  if (bytes.length < FIXED + 4) throw new DacError("truncated .dac header");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint16(8, true), size = v.getUint16(10, true), nlen = v.getUint8(96);
  if (version !== VERSION)
    throw new DacError(`.dac format version ${version} is not supported (this dacli reads version ${VERSION})`);
  if (size < FIXED + nlen + 4) throw new DacError("corrupt .dac header (bad header size)");
  if (bytes.length < size) throw new DacError("truncated .dac header");
  if (crc32(bytes.subarray(0, size - 4)) !== v.getUint32(size - 4, true))
    throw new DacError("corrupt .dac header (CRC mismatch)");
  let name;
  try {
    name = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(FIXED, FIXED + nlen));
  } catch {
    throw new DacError("corrupt .dac header (model name is not UTF-8)");
  }
  const h = {
    model_sample_rate: v.getUint32(12, true), hop_length: v.getUint32(16, true),
    original_sample_rate: v.getUint32(20, true), channels: v.getUint16(24, true),
    n_codebooks: v.getUint16(26, true), bits_per_code: v.getUint8(28), frames_per_block: v.getUint16(30, true),
    original_length: v.getBigUint64(32, true), model_length: v.getBigUint64(40, true),
    n_frames: v.getBigUint64(48, true), input_loudness: v.getFloat32(56, true), gain_db: v.getFloat32(60, true),
    model_hash: hex(bytes.subarray(64, 96)), model_name: name,
    bandwidth_hz: size >= FIXED + nlen + 8 ? v.getUint32(FIXED + nlen, true) : 0,
  };
  validate(h);
  return [h, size];
}

// ---- blocks ----------------------------------------------------------------------------------------

function zstdBound(n) {
  return n + (n >> 8) + (n < (128 << 10) ? ((128 << 10) - n) >> 11 : 0) + 18;
}

// The content size a zstd frame declares (FORMAT.md: it must), or -1.
function zstdContentSize(p) {
  if (p.length < 5 || p[0] !== 0x28 || p[1] !== 0xb5 || p[2] !== 0x2f || p[3] !== 0xfd) return -1;
  const fhd = p[4], fcsFlag = fhd >> 6, single = (fhd >> 5) & 1, dictFlag = fhd & 3;
  const fcsSize = [single ? 1 : 0, 2, 4, 8][fcsFlag];
  if (fcsSize === 0) return -1;
  const at = 5 + (single ? 0 : 1) + [0, 1, 2, 4][dictFlag];
  if (p.length < at + fcsSize) return -1;
  let value = 0;
  for (let i = fcsSize - 1; i >= 0; i--) value = value * 256 + p[at + i];
  return fcsSize === 2 ? value + 256 : value;
}

function inflate(payload, need) {
  if (zstdContentSize(payload) !== need) return null;
  try {
    const out = decompress(payload, new Uint8Array(need));
    return out.length === need ? out : null;
  } catch {
    return null;
  }
}

function unpack(raw, count, bits) {
  const out = new Uint16Array(count);
  let bit = 0;
  for (let i = 0; i < count; i++) {
    let value = 0;
    for (let b = 0; b < bits; b++, bit++) value = (value << 1) | ((raw[bit >> 3] >> (7 - (bit & 7))) & 1);
    out[i] = value;
  }
  return out;
}

function blockCount(h) {
  return ceilDiv(h.n_frames, BigInt(h.frames_per_block));
}

function checkRoom(h, available) {
  const blocks = blockCount(h);
  if (blocks * BigInt(BLOCK_HEAD + 1) > BigInt(available))
    throw new DacError(`truncated (the header announces ${blocks} blocks; the file is too short to hold them)`);
}

// A .dac file's bytes → {header, codes}: codes[c][k] an Int32Array of the frames of codebook k, channel c.
export function read(buf) {
  const bytes = new Uint8Array(buf);
  const [h, start] = parseHeader(bytes);
  checkRoom(h, bytes.length - start);
  const frames = Number(h.n_frames), per = h.frames_per_block, blocks = Number(blockCount(h));
  const codes = Array.from({ length: h.channels }, () =>
    Array.from({ length: h.n_codebooks }, () => new Int32Array(frames)));
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = start;
  for (let i = 0; i < blocks; i++) {
    const t0 = i * per, f = Math.min(per, frames - t0);
    if (bytes.length < pos + BLOCK_HEAD) throw new DacError(`truncated (block ${i} of ${blocks} is missing)`);
    const coding = v.getUint8(pos), size = v.getUint32(pos + 1, true), crc = v.getUint32(pos + 5, true);
    pos += BLOCK_HEAD;
    const need = Number(rawBlockSize(h, f));
    if (!(coding === 0 || coding === 1) || (coding === 0 && size !== need) ||
        (coding === 1 && !(Math.floor(need / MAX_ZSTD_RATIO) <= size && size <= zstdBound(need))))
      throw new DacError(`corrupt block ${i} (coding ${coding}, ${size} bytes for ${need} raw)`);
    const payload = bytes.subarray(pos, pos + size);
    if (payload.length < size) throw new DacError(`truncated (block ${i} is cut short)`);
    pos += size;
    const raw = coding === 0 ? payload : inflate(payload, need);
    if (raw === null || crc32(raw) !== crc) throw new DacError(`corrupt data in block ${i} (CRC mismatch)`);
    const values = unpack(raw, h.n_codebooks * h.channels * f, h.bits_per_code);
    let j = 0;
    for (let k = 0; k < h.n_codebooks; k++)
      for (let c = 0; c < h.channels; c++)
        for (let t = 0; t < f; t++) codes[c][k][t0 + t] = values[j++];
  }
  if (pos !== bytes.length) throw new DacError(`${bytes.length - pos} unexpected bytes after the last block`);
  return { header: h, codes };
}

// The header's fields as JSON-friendly values (integers as numbers where they fit, else strings), or the
// reason the file is refused, as a string (what `window.dacli.inspect` returns).
export function inspect(buf) {
  try {
    const { header } = read(buf);
    return Object.fromEntries(Object.entries(header).map(([k, x]) =>
      [k, typeof x === "bigint" ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x]));
  } catch (e) {
    if (e instanceof DacError) return e.message;
    throw e;
  }
}

// ---- decoding --------------------------------------------------------------------------------------

// The decoder's low-pass at a recorded bandwidth (FORMAT.md, "Bandwidth"): 257 taps, Kaiser β = 8.
function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 200; k++) {
    term *= (x / (2 * k)) * (x / (2 * k));
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

export function lowpassTaps(bandwidth, rate) {
  const half = 128, n = 2 * half + 1, f = (bandwidth + 500) / rate, beta = 8.0;
  const h = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const k = i - half, x = 2 * f * k;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const r = (2 * i) / (n - 1) - 1;
    h[i] = 2 * f * sinc * (besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / besselI0(beta));
    total += h[i];
  }
  return h.map((t) => t / total);
}

// Samples [from, upto) of x low-passed (257 taps, zeros beyond x's ends) into y; each needs x up to 128
// samples ahead.
function lowpass(x, taps, y, from, upto) {
  const half = (taps.length - 1) / 2, n = x.length;
  for (let i = from; i < upto; i++) {
    let acc = 0;
    const lo = Math.max(0, i - half), hi = Math.min(n - 1, i + half);
    for (let j = lo; j <= hi; j++) acc += taps[i + half - j] * x[j];
    y[i] = acc;
  }
}

export class Model {
  // info: the export's dacli-onnx.json; session: an onnxruntime-web InferenceSession of decoder_step.onnx.
  constructor(info, session, ort) {
    Object.assign(this, { info, session, ort });
  }

  // Refuse a file this model cannot decode, as dacli.codec.check_model does.
  check(h) {
    const m = this.info;
    if (h.model_hash !== m.weights_hash)
      throw new DacError(`encoded with model '${h.model_name}' (weights ${h.model_hash.slice(0, 12)}), not with ` +
                         `'${m.name}' (${m.weights_hash.slice(0, 12)}): this page plays files of '${m.name}'`);
    if (h.model_sample_rate !== m.sample_rate || h.hop_length !== m.hop_length)
      throw new DacError("model rates do not match the file");
    if (2 ** h.bits_per_code !== m.codebook_size || h.n_codebooks > m.n_codebooks)
      throw new DacError(`${h.n_codebooks} codebooks of ${2 ** h.bits_per_code} codes do not fit the model's ` +
                         `${m.n_codebooks} of ${m.codebook_size}`);
    if (Number(h.model_length) > MAX_SECONDS * h.model_sample_rate)
      throw new DacError(`too large for the page: ${(Number(h.model_length) / h.model_sample_rate / 60).toFixed(1)} ` +
                         `minutes of audio (it plays up to ${MAX_SECONDS / 60} minutes; use dacli decode)`);
  }

  // One push of the step graph: codes[c][k] of frames t … t + n − 1 (zeros past the stream's `frames`),
  // every channel a row, and the decoder's state → [the rows' samples, (channels · n · hop) float32, the
  // next state].
  async push(codes, k, t, n, frames, states) {
    const rows = codes.length, data = new BigInt64Array(rows * k * n), ort = this.ort;
    for (let c = 0; c < rows; c++)
      for (let i = 0; i < k; i++)
        for (let j = 0; j < n && t + j < frames; j++) data[(c * k + i) * n + j] = BigInt(codes[c][i][t + j]);
    const feeds = {
      codes: new ort.Tensor("int64", data, [rows, k, n]),
      position: new ort.Tensor("int64", new BigInt64Array(rows).fill(BigInt(t)), [rows]),
      frames: new ort.Tensor("int64", new BigInt64Array(rows).fill(BigInt(frames)), [rows]),
    };
    states.forEach((s, i) => { feeds[`state${i}`] = s; });
    const out = await this.session.run(feeds);
    return [out.audio.data, states.map((_, i) => out[`next${i}`])];
  }

  // One push of silence through the step graph, so that the first push of a file does not pay for the
  // session's first run (kernels set up, weights laid out): playback then starts sooner.
  async warmUp() {
    const ort = this.ort, states = this.info.decoder_step.states;
    const codes = [Array.from({ length: 1 }, () => new Int32Array(32))];
    await this.push(codes, 1, 0, 32, 32,
                    states.map(([c, n]) => new ort.Tensor("float32", new Float32Array(c * n), [1, c, n])));
  }

  // A .dac file's bytes → {sampleRate, channels: [Float32Array…], header}: the model-rate audio of
  // FORMAT.md's "Decoding" steps 1-3, by pushes of `width` frames through the step graph (FORMAT.md, "ONNX
  // graphs"), then the frames that carry the last samples out. onReady(channels, from, upto, fraction) each
  // time samples [from, upto) are final (low-passed where the file asks: 128 samples later).
  async decode(buf, onReady = () => {}, width = 32) {
    const { header: h, codes } = read(buf);
    this.check(h);
    const ort = this.ort, hop = h.hop_length, frames = Number(h.n_frames), length = Number(h.model_length);
    const { delay, length: [a, b], states } = this.info.decoder_step;
    const rows = h.channels, k = h.n_codebooks, samples = a * frames + b;
    const total = Math.ceil((samples + delay) / hop); // frames pushed: the codes and those after them
    const gain = Math.fround(10 ** (-h.gain_db / 20));
    const taps = h.bandwidth_hz ? lowpassTaps(h.bandwidth_hz, h.model_sample_rate) : null;
    const raw = Array.from({ length: rows }, () => new Float32Array(length));
    const channels = taps ? Array.from({ length: rows }, () => new Float32Array(length)) : raw;
    let state = states.map(([c, n]) => new ort.Tensor("float32", new Float32Array(rows * c * n), [rows, c, n]));
    let emitted = 0, ready = 0, audio;
    for (let t = 0; t < total; t += width) {
      const n = Math.min(width, total - t), per = n * hop;
      [audio, state] = await this.push(codes, k, t, n, frames, state);
      const start = emitted - delay; // the position of this push's first sample
      emitted += per;
      for (let c = 0; c < rows; c++)
        for (let i = Math.max(0, -start); i < per && start + i < length; i++)
          raw[c][start + i] = Math.fround(audio[c * per + i] * gain);
      const decoded = Math.max(0, Math.min(length, emitted - delay));
      const upto = !taps || decoded === length ? decoded : Math.max(0, decoded - (taps.length - 1) / 2);
      if (upto > ready) {
        if (taps) for (let c = 0; c < rows; c++) lowpass(raw[c], taps, channels[c], ready, upto);
        onReady(channels, ready, upto, Math.min(1, (t + n) / total));
        ready = upto;
      }
    }
    return { sampleRate: h.model_sample_rate, channels, header: h };
  }
}

// The model of an export folder (URL of the folder, ending in "/"), decoded by onnxruntime-web: WebGPU
// where the browser has it, else WASM.
export async function loadModel(ort, base) {
  const info = await (await fetch(new URL("dacli-onnx.json", base))).json();
  const graph = new Uint8Array(await (await fetch(new URL(info.graphs.decoder_step.file, base))).arrayBuffer());
  const providers = typeof navigator !== "undefined" && navigator.gpu ? ["webgpu", "wasm"] : ["wasm"];
  let session;
  try {
    session = await ort.InferenceSession.create(graph, { executionProviders: providers });
  } catch {
    session = await ort.InferenceSession.create(graph, { executionProviders: ["wasm"] });
  }
  const model = new Model(info, session, ort);
  await model.warmUp();
  return model;
}
