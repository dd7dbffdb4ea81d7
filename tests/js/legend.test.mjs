import assert from "node:assert/strict";
import { test } from "node:test";
import { fit, layoutLegend, levelWarnings, wrap } from "../../js/lib/legend.js";
import { PALETTE } from "../../js/lib/palette.js";

const rows = [
  { character: 1, input: "audio_0", source: { file: "alice.wav", title: "Load Audio" } },
  { character: 2, input: "audio_1", source: { file: "bob.wav", title: "Load Audio" } },
];
const loud = { duration: 4.04, rms_db: -21, peak: 0.6, envelope: [0.1, 0.6, 0.3] };
const silent = { duration: 3.1, rms_db: -120, peak: 0, envelope: [0, 0, 0] };

test("one row per character: its colour, number, source, waveform and level", () => {
  const { ops } = layoutLegend(rows, { audio_0: loud, audio_1: silent }, [], 320);
  const swatches = ops.filter((o) => o.kind === "rect");
  assert.deepEqual(swatches.map((o) => o.fill), [PALETTE[0], PALETTE[1]]);
  const texts = ops.filter((o) => o.kind === "text").map((o) => o.text);
  assert.ok(texts.includes("audio_0 ← alice.wav") && texts.includes("audio_1 ← bob.wav"));
  assert.ok(texts.includes("4.0 s · -21 dB"));
  assert.ok(texts.includes("3.1 s · -inf dB · SILENT"));
  const waves = ops.filter((o) => o.kind === "wave");
  assert.equal(waves.length, 2);
  assert.deepEqual(waves[0].values, loud.envelope);
  assert.ok(waves.every((w) => w.x + w.w <= 320));
});

test("a silent track becomes a warning naming the character", () => {
  const w = levelWarnings(rows, { audio_0: loud, audio_1: silent });
  assert.deepEqual(w, ["Character 2's audio (audio_1) is silent: that mouth will not move."]);
});

test("warnings wrap to the width and grow the legend", () => {
  const a = layoutLegend(rows, {}, [], 260).height;
  const b = layoutLegend(rows, {}, ["x ".repeat(80).trim()], 260);
  assert.ok(b.height > a + 14, "a long warning takes several lines");
  assert.ok(wrap("aaaa bbbb cccc", 60).length >= 2);
});

test("an unconnected character is drawn as such", () => {
  const { ops } = layoutLegend([{ character: 1, input: "audio_0", source: null }], {}, [], 300);
  assert.ok(ops.some((o) => o.kind === "text" && o.text === "audio_0: not connected"));
});

test("a long file name is shortened from the front so the differing end stays visible", () => {
  const label = fit("interview_speaker_one_take_2.wav", 70);
  assert.ok(label.startsWith("…") && label.endsWith("take_2.wav") && label.length === 11);
  const { ops } = layoutLegend([{ character: 1, input: "audio_0", source: { file: "a_very_long_recording_name_take_2.wav" } }], {}, [], 300);
  const text = ops.find((o) => o.kind === "text" && o.text.startsWith("audio_0")).text;
  assert.ok(text.endsWith("take_2.wav"), text);
});
