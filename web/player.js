// The player page: opens a dropped or chosen .dac file, decodes it with dacli.js (progress and waveform as
// each window is final), plays it with Web Audio; window.dacli.inspect and window.dacli.decode for scripts.

import * as ort from "./vendor/ort.min.mjs";
import { DacError, inspect, loadModel } from "./dacli.js";

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need a cross-origin-isolated page; a static server does not send that

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
const modelReady = loadModel(ort, new URL("./model/", import.meta.url));
let audio = null;

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
// "Decoding", steps 1-3), drawn and made playable as it goes.
async function decode(buf) {
  const model = await modelReady;
  const h = inspect(buf);
  if (typeof h === "string") throw new DacError(h);
  const canvas = $("wave");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("play").disabled = true;
  const started = performance.now();
  const result = await model.decode(buf, (channel, start, samples, done, total) => {
    $("progress").value = done / total;
    status(`Decoding… ${Math.round(100 * done / total)} %`);
    drawWindow(channel, start, samples, h.channels, h.model_length);
  });
  const seconds = result.channels[0].length / result.sampleRate;
  status(`Decoded ${seconds.toFixed(2)} s in ${((performance.now() - started) / 1000).toFixed(2)} s.`);
  showFields(result.header);
  audio = result;
  $("play").disabled = false;
  return { sampleRate: result.sampleRate, channels: result.channels };
}

async function open(file) {
  const buf = new Uint8Array(await file.arrayBuffer());
  const verdict = inspect(buf);
  if (typeof verdict === "string") return status(`${file.name}: ${verdict}`, true);
  showFields(verdict);
  try {
    await decode(buf);
  } catch (e) {
    status(`${file.name}: ${e instanceof DacError ? e.message : "cannot decode (" + e + ")"}`, true);
  }
}

$("play").onclick = () => {
  const ctx = new AudioContext();
  const buffer = ctx.createBuffer(audio.channels.length, audio.channels[0].length, audio.sampleRate);
  audio.channels.forEach((y, c) => buffer.copyToChannel(y, c));
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  source.start();
};
$("file").onchange = (e) => e.target.files[0] && open(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); e.dataTransfer.files[0] && open(e.dataTransfer.files[0]); };

window.dacli = {
  inspect: (buffer) => inspect(new Uint8Array(buffer)),
  decode: async (buffer) => decode(new Uint8Array(buffer)),
  ready: modelReady.then((m) => m.info),
};
modelReady.then((m) => status(`Ready: model ${m.info.name}. Open a .dac file.`),
                (e) => status(`The model did not load (${e}); run make web`, true));
