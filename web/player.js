// The player page: opens a dropped or chosen .dac file, decodes it with dacli.js and plays it with Web Audio
// while it decodes (each stretch scheduled as soon as it is final; progress and waveform drawn as it goes);
// window.dacli.inspect and window.dacli.decode for scripts, window.dacli.playback for what played when.

import * as ort from "./vendor/ort.min.mjs";
import { DacError, inspect, loadModel } from "./dacli.js";

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
// Threads need a cross-origin-isolated page (make web-serve sends the headers for it); else one.
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
const LEAD = 0.1; // seconds between the first stretch being final and its playing

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
const modelReady = loadModel(ort, new URL("./model/", import.meta.url));
let audio = null, context = null;

// Plays stretches of a file as they come: the first LEAD seconds after it is final, each next one where it
// follows on; where decoding falls behind, playback waits for it (a gap, nothing lost). `log` has one entry
// per stretch: the share decoded, whether audio was playing by then, the gaps so far.
class Playback {
  constructor(sampleRate) {
    context ||= new AudioContext();
    context.resume();
    Object.assign(this, { sampleRate, at: null, gaps: 0, log: [], started: performance.now() });
  }

  add(channels, from, upto, fraction) {
    const n = upto - from, buffer = context.createBuffer(channels.length, n, this.sampleRate);
    channels.forEach((y, c) => buffer.copyToChannel(y.subarray(from, upto), c));
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    if (this.at === null) this.at = context.currentTime + LEAD - from / this.sampleRate;
    let when = this.at + from / this.sampleRate;
    if (when < context.currentTime) {
      this.at += context.currentTime + 0.02 - when;
      when = context.currentTime + 0.02;
      this.gaps += 1;
    }
    source.start(when);
    this.log.push({ fraction, playing: context.currentTime >= this.at, contextState: context.state, gaps: this.gaps,
                    ms: performance.now() - this.started });
  }
}

function drawWindow(channel, start, samples, channels, length) {
  const canvas = $("wave"), g = canvas.getContext("2d");
  const laneHeight = canvas.height / channels, mid = laneHeight * (channel + 0.5);
  const perPixel = length / canvas.width;
  g.fillStyle = "#7dd3fc";
  for (let x = Math.floor(start / perPixel); x < Math.ceil((start + samples.length) / perPixel); x++) {
    let lo = 0, hi = 0;
    const from = Math.max(0, Math.floor(x * perPixel) - start), upto = Math.min(samples.length, Math.floor((x + 1) * perPixel) - start);
    for (let i = from; i < upto; i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
    g.fillRect(x, mid - hi * laneHeight / 2, 1, Math.max(1, (hi - lo) * laneHeight / 2));
  }
}

function showFields(h) {
  const rows = [["model", h.model_name], ["model rate", `${h.model_sample_rate} Hz`],
    ["original rate", `${h.original_sample_rate} Hz`], ["channels", h.channels],
    ["duration", `${(Number(h.original_length) / h.original_sample_rate).toFixed(2)} s`],
    ["codebooks", `${h.n_codebooks} of ${2 ** h.bits_per_code} codes`], ["gain", `${h.gain_db.toFixed(2)} dB`],
    ["bandwidth", h.bandwidth_hz ? `${h.bandwidth_hz} Hz` : "full"]];
  $("fields").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
}

// A .dac file's bytes → {sampleRate, channels}: the audio at the model rate, gain restored (FORMAT.md,
// "Decoding", steps 1-3), drawn as it goes, and played as it goes where `play`.
async function decode(buf, play = false) {
  const model = await modelReady;
  const h = inspect(buf);
  if (typeof h === "string") throw new DacError(h);
  const canvas = $("wave");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("play").disabled = true;
  const started = performance.now();
  const playback = play ? new Playback(h.model_sample_rate) : null;
  window.dacli.playback = playback;
  const result = await model.decode(buf, (channels, from, upto, fraction) => {
    $("progress").value = fraction;
    status(`${play ? "Playing while decoding" : "Decoding"}… ${Math.round(100 * fraction)} %`);
    channels.forEach((y, c) => drawWindow(c, from, y.subarray(from, upto), h.channels, h.model_length));
    if (playback) playback.add(channels, from, upto, fraction);
  });
  const seconds = result.channels[0].length / result.sampleRate, took = (performance.now() - started) / 1000;
  status(`Decoded ${seconds.toFixed(2)} s in ${took.toFixed(2)} s (${(seconds / took).toFixed(2)}× real time` +
         `${ort.env.wasm.numThreads > 1 ? `, ${ort.env.wasm.numThreads} threads` : ""}).`);
  showFields(result.header);
  audio = result;
  $("play").disabled = false;
  return { sampleRate: result.sampleRate, channels: result.channels, seconds: took };
}

async function open(file) {
  const buf = new Uint8Array(await file.arrayBuffer());
  const verdict = inspect(buf);
  if (typeof verdict === "string") return status(`${file.name}: ${verdict}`, true);
  showFields(verdict);
  try {
    await decode(buf, true);
  } catch (e) {
    status(`${file.name}: ${e instanceof DacError ? e.message : "cannot decode (" + e + ")"}`, true);
  }
}

$("play").onclick = () => new Playback(audio.sampleRate).add(audio.channels, 0, audio.channels[0].length, 1);
$("file").onchange = (e) => e.target.files[0] && open(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); e.dataTransfer.files[0] && open(e.dataTransfer.files[0]); };

window.dacli = {
  inspect: (buffer) => inspect(new Uint8Array(buffer)),
  decode: async (buffer, play = false) => decode(new Uint8Array(buffer), play),
  playback: null,
  threads: ort.env.wasm.numThreads,
  ready: modelReady.then((m) => m.info),
};
modelReady.then((m) => status(`Ready: model ${m.info.name}. Open a .dac file.`),
                (e) => status(`The model did not load (${e}); run make web`, true));
