// HunyuanVideo-Avatar: on "Avatar Character Masks", show the character overlay (numbered, coloured masks on
// the reference image) and, per character, which audio input drives it with a tiny waveform, duration and
// level (or that it listens: no audio connected). The overlay is kept in the node's properties, so it survives saving and reopening the workflow.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { mixToMono, summarize } from "./lib/audio_level.js";
import { layoutLegend, levelWarnings } from "./lib/legend.js";
import { AUDIO_NODE, FACE_NODE, characterAudio, viewOfGraph } from "./lib/wiring.js";

const OVERLAY_PROP = "hyavatar_overlay"; // {image: data URL thumbnail, characters: [...] } on the face node
const AUDIO_PROP = "hyavatar_audio";     // {audio_k: summary} on the audio-encode node, from its last run
const THUMB_MAX = 384;
const IMG_H = 200;    // overlay height in the node (the image is fitted inside)
const MIN_W = 340;
const fileSummaries = new Map();         // "subfolder/file.wav" -> summary | "pending" | "error"

function viewUrl(ref) {
  const q = new URLSearchParams({ filename: ref.filename, type: ref.type ?? "temp", subfolder: ref.subfolder ?? "" });
  return api.apiURL(`/view?${q}`);
}

async function thumbnail(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  const scale = Math.min(1, THUMB_MAX / Math.max(img.width, img.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(img.width * scale);
  canvas.height = Math.round(img.height * scale);
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.85);
}

/** Decode a LoadAudio file of the input folder in the browser (before any run). */
function summaryOfFile(file) {
  const known = fileSummaries.get(file);
  if (known) return typeof known === "object" ? known : null;
  fileSummaries.set(file, "pending");
  const cut = file.lastIndexOf("/");
  const ref = { filename: file.slice(cut + 1), subfolder: cut < 0 ? "" : file.slice(0, cut), type: "input" };
  fetch(viewUrl(ref))
    .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.statusText))))
    .then((buf) => new OfflineAudioContext(1, 1, 16000).decodeAudioData(buf))
    .then((audio) => {
      const channels = Array.from({ length: audio.numberOfChannels }, (_, c) => audio.getChannelData(c));
      fileSummaries.set(file, summarize(mixToMono(channels), audio.sampleRate));
    })
    .catch(() => fileSummaries.set(file, "error"))
    .finally(() => app.graph?.setDirtyCanvas(true, true));
  return null;
}

function summariesFor(info) {
  const encoder = info.encoder != null ? app.graph.getNodeById(info.encoder) : null;
  const fromRun = encoder?.properties?.[AUDIO_PROP] ?? {};
  const out = {};
  for (const r of info.rows) {
    const s = fromRun[r.input] ?? (r.source?.file ? summaryOfFile(r.source.file) : null);
    if (s) out[r.input] = s;
  }
  return out;
}

function paint(ctx, ops) {
  for (const op of ops) {
    if (op.kind === "rect") { ctx.fillStyle = op.fill; ctx.fillRect(op.x, op.y, op.w, op.h); }
    if (op.kind === "text") {
      ctx.font = `${op.bold ? "bold " : ""}11px sans-serif`;
      ctx.fillStyle = op.color; ctx.textAlign = op.align; ctx.fillText(op.text, op.x, op.y);
    }
    if (op.kind === "wave") {
      ctx.fillStyle = "#1c1c1c"; ctx.fillRect(op.x, op.y, op.w, op.h);
      ctx.fillStyle = op.color;
      const bar = op.w / op.values.length, mid = op.y + op.h / 2;
      op.values.forEach((v, i) => { const h = Math.max(1, v * op.h); ctx.fillRect(op.x + i * bar, mid - h / 2, Math.max(bar - 0.5, 0.5), h); });
    }
  }
}

function setup(node) {
  const root = document.createElement("div");
  root.className = "hyavatar-characters";
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;";
  const img = document.createElement("img");
  img.style.cssText = `width:100%;height:${IMG_H}px;object-fit:contain;display:none;`;
  img.alt = "character overlay";
  const legend = document.createElement("canvas");
  legend.className = "hyavatar-legend";
  root.append(img, legend);
  const state = { signature: "", legendHeight: 0 };
  const widget = node.addDOMWidget("character_overlay", "hyavatar_overlay", root, {
    serialize: false, hideOnZoom: false,
    getMinHeight: () => (img.style.display === "none" ? 0 : IMG_H) + state.legendHeight + 8,
  });

  const fitNode = () => node.setSize([Math.max(node.size[0], MIN_W), Math.max(node.size[1], node.computeSize()[1])]);
  node.hyavatarShowOverlay = () => {
    const saved = node.properties?.[OVERLAY_PROP];
    if (saved?.image) { img.src = saved.image; img.style.display = "block"; fitNode(); }
  };
  node.hyavatarRefresh = () => {
    const info = characterAudio(viewOfGraph(app.graph), node.id);
    const summaries = summariesFor(info);
    const warnings = [...info.warnings, ...levelWarnings(info.rows, summaries)];
    const signature = JSON.stringify([info, summaries, warnings, root.clientWidth]);
    if (signature === state.signature) return;
    state.signature = signature;
    const width = Math.max(root.clientWidth || 300, 240);
    const { ops, height } = layoutLegend(info.rows, summaries, warnings, width);
    const dpr = window.devicePixelRatio || 1;
    legend.width = width * dpr; legend.height = height * dpr;
    legend.style.width = `${width}px`; legend.style.height = `${height}px`;
    const ctx = legend.getContext("2d");
    ctx.scale(dpr, dpr);
    paint(ctx, ops);
    legend.dataset.rows = JSON.stringify(info.rows.map((r) => ({ character: r.character, input: r.input, role: r.role, file: r.source?.file ?? null, summary: summaries[r.input] ? true : false })));
    legend.dataset.warnings = JSON.stringify(warnings);
    if (height !== state.legendHeight) { state.legendHeight = height; fitNode(); }
    node.setDirtyCanvas(true, true);
  };

  const onExecuted = node.onExecuted;
  node.onExecuted = function (output) {
    onExecuted?.apply(this, arguments);
    const ref = output?.avatar_overlay?.[0];
    if (!ref) return;
    thumbnail(viewUrl(ref)).then((image) => {
      node.properties[OVERLAY_PROP] = { image, characters: output.avatar_characters ?? [] };
      node.hyavatarShowOverlay();
    });
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function () {
    onConfigure?.apply(this, arguments);
    node.hyavatarShowOverlay();
  };
  return widget;
}

app.registerExtension({
  name: "HunyuanVideoAvatar.CharacterOverlay",
  nodeCreated(node) {
    if (node.comfyClass === FACE_NODE) setup(node);
    if (node.comfyClass === AUDIO_NODE) {
      const onExecuted = node.onExecuted;
      node.onExecuted = function (output) {
        onExecuted?.apply(this, arguments);
        if (output?.avatar_audio) node.properties[AUDIO_PROP] = Object.fromEntries(output.avatar_audio.map((s) => [s.input, s]));
      };
    }
  },
  setup() {
    // Wiring and audio files change anywhere upstream; a cheap poll keeps every legend current.
    setInterval(() => {
      for (const node of app.graph?._nodes ?? []) if (node.hyavatarRefresh) node.hyavatarRefresh();
    }, 700);
  },
});
