// Layout of the per-character legend drawn under the overlay: one row per character (colour swatch with
// its number, the audio input and its source, a tiny waveform, duration and level; or "listens" for a
// character without audio), then warnings.
// Returns plain drawing operations so the layout is testable without a canvas.

import { formatDuration, formatLevel, verdict } from "./audio_level.js";
import { characterColour } from "./palette.js";

export const ROW_H = 40;
export const LISTENER_TEXT = "listens: mouth closed, natural idle";
const PAD = 6;
const WAVE_W = 96;
const LINE_H = 14;
const CHAR_W = 6.2; // average width of the 11 px UI font, for wrapping without a canvas
const COLOURS = { text: "#ddd", dim: "#999", warn: "#ffb347", bad: "#ff5c5c", wave: "#8fd18f" };
const VERDICT_COLOUR = { ok: COLOURS.dim, quiet: COLOURS.warn, clipping: COLOURS.warn, silent: COLOURS.bad };
const VERDICT_TEXT = { ok: "", quiet: " · very quiet", clipping: " · clipping", silent: " · SILENT" };

export function wrap(text, width) {
  const max = Math.max(8, Math.floor(width / CHAR_W));
  const lines = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && (line + " " + word).length > max) { lines.push(line); line = word; } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, line] : lines;
}

/** Shorten to `width` px keeping the end (file names differ at the end: take_1.wav / take_2.wav). */
export function fit(text, width) {
  const max = Math.max(4, Math.floor(width / CHAR_W));
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`;
}

function sourceLabel(row) {
  if (!row.source) return `${row.input}: not connected`;
  return `${row.input} ← ${row.source.file ?? row.source.title}`;
}

/** Warnings about the tracks themselves (silence, clipping), to list under the rows. */
export function levelWarnings(rows, summaries) {
  const out = [];
  for (const r of rows) {
    const s = summaries[r.input];
    const v = s && verdict(s);
    if (v === "silent") out.push(`Character ${r.character}'s audio (${r.input}) is silent: that mouth will not move.`);
    if (v === "quiet") out.push(`Character ${r.character}'s audio (${r.input}) is very quiet: normalise it for clear lip motion.`);
  }
  return out;
}

/** Drawing ops for `rows` (wiring.characterAudio rows), `summaries` {audio_k: summary}, `warnings`. */
export function layoutLegend(rows, summaries, warnings, width) {
  const ops = [];
  let y = PAD;
  for (const r of rows) {
    const colour = characterColour(r.character);
    ops.push({ kind: "rect", x: PAD, y, w: 22, h: 22, fill: colour });
    ops.push({ kind: "text", x: PAD + 11, y: y + 15, text: String(r.character), color: "#000", align: "center", bold: true });
    const textW = width - 3 * PAD - 22 - WAVE_W - PAD;
    const label = r.source ? `${r.input} ← ${fit(r.source.file ?? r.source.title, textW - 9 * CHAR_W)}` : sourceLabel(r);
    ops.push({ kind: "text", x: 2 * PAD + 22, y: y + 11, text: label, color: r.source ? COLOURS.text : COLOURS.dim, align: "left" });
    const s = summaries[r.input];
    if (s) {
      const v = verdict(s);
      const info = `${formatDuration(s.duration)} · ${formatLevel(s.rms_db)}${VERDICT_TEXT[v]}`;
      ops.push({ kind: "text", x: 2 * PAD + 22, y: y + 26, text: info, color: VERDICT_COLOUR[v], align: "left" });
      ops.push({ kind: "wave", x: width - PAD - WAVE_W, y, w: WAVE_W, h: 30, values: s.envelope, color: v === "silent" ? COLOURS.bad : colour });
    } else if (r.source) {
      ops.push({ kind: "text", x: 2 * PAD + 22, y: y + 26, text: "level known after a run", color: COLOURS.dim, align: "left" });
    } else {
      ops.push({ kind: "text", x: 2 * PAD + 22, y: y + 26, text: LISTENER_TEXT, color: COLOURS.text, align: "left" });
    }
    y += ROW_H;
  }
  for (const w of warnings) {
    for (const line of wrap(`⚠ ${w}`, width - 2 * PAD)) {
      ops.push({ kind: "text", x: PAD, y: y + 10, text: line, color: COLOURS.warn, align: "left" });
      y += LINE_H;
    }
  }
  return { ops, height: y + PAD };
}
