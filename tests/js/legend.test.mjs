import assert from "node:assert/strict";
import { test } from "node:test";
import { LISTENER_TEXT, ROW_H, fit, layoutLegend, levelWarnings, wrap } from "../../js/lib/legend.js";
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

test("an unconnected character is drawn as such: a listener", () => {
  const { ops } = layoutLegend([{ character: 1, input: "audio_0", source: null, role: "listener" }], {}, [], 300);
  assert.ok(ops.some((o) => o.kind === "text" && o.text === "audio_0: not connected"));
  assert.ok(ops.some((o) => o.kind === "text" && o.text === LISTENER_TEXT && LISTENER_TEXT.startsWith("listens")));
  assert.ok(!ops.some((o) => o.kind === "wave"));
});

test("four characters: four rows with their own colours, one under the other, inside the width", () => {
  const four = ["one", "two", "three", "four"].map((name, k) => ({ character: k + 1, input: `audio_${k}`, source: { file: `${name}.wav` } }));
  four[2] = { character: 3, input: "audio_2", source: null, role: "listener" };
  const summaries = { audio_0: loud, audio_1: loud, audio_3: silent };
  const { ops, height } = layoutLegend(four, summaries, [], 300);
  const swatches = ops.filter((o) => o.kind === "rect");
  assert.deepEqual(swatches.map((o) => o.fill), PALETTE.slice(0, 4));
  assert.deepEqual(swatches.map((o) => o.y), [0, 1, 2, 3].map((k) => swatches[0].y + k * ROW_H));
  assert.deepEqual(ops.filter((o) => o.kind === "text" && o.bold).map((o) => o.text), ["1", "2", "3", "4"]);
  assert.equal(ops.filter((o) => o.kind === "wave").length, 3);
  assert.ok(ops.every((o) => (o.kind === "text" && o.align !== "left") || (o.x + (o.w ?? 0) <= 300)));
  assert.ok(height >= 4 * ROW_H);
  assert.equal(new Set(PALETTE.slice(0, 4)).size, 4);
});

test("a long file name is shortened from the front so the differing end stays visible", () => {
  const label = fit("interview_speaker_one_take_2.wav", 70);
  assert.ok(label.startsWith("…") && label.endsWith("take_2.wav") && label.length === 11);
  const { ops } = layoutLegend([{ character: 1, input: "audio_0", source: { file: "a_very_long_recording_name_take_2.wav" } }], {}, [], 300);
  const text = ops.find((o) => o.kind === "text" && o.text.startsWith("audio_0")).text;
  assert.ok(text.endsWith("take_2.wav"), text);
});
