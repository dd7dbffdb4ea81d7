import assert from "node:assert/strict";
import { test } from "node:test";
import { characterAudio, viewOfWorkflow } from "../../js/lib/wiring.js";
import { fourSpeakers, twoSpeakers, withoutAudio } from "./fixtures.mjs";

test("audio_k drives character k + 1, through the sampler", () => {
  const info = characterAudio(viewOfWorkflow(twoSpeakers()), 3);
  assert.equal(info.encoder, 5);
  assert.equal(info.characters, 2);
  assert.deepEqual(info.rows.map((r) => [r.character, r.input, r.source?.file]), [[1, "audio_0", "alice.wav"], [2, "audio_1", "bob.wav"]]);
  assert.deepEqual(info.warnings, []);
});

test("a character without audio listens: no warning, its row says so", () => {
  // Before roles, a missing track was an error to fix (a warning naming audio_1); now that character is a
  // listener (Whisper of silence), which the backend supports.
  const info = characterAudio(viewOfWorkflow(withoutAudio(twoSpeakers(), 1)), 3);
  assert.deepEqual(info.rows.map((r) => [r.character, r.role, r.source]), [[1, "speaker", info.rows[0].source], [2, "listener", null]]);
  assert.equal(info.rows[0].source.file, "alice.wav");
  assert.deepEqual(info.warnings, []);
});

test("four speakers: audio_0 .. audio_3 drive characters 1 .. 4 in order", () => {
  const info = characterAudio(viewOfWorkflow(fourSpeakers()), 3);
  assert.equal(info.characters, 4);
  assert.deepEqual(info.rows.map((r) => [r.character, r.input, r.role, r.source?.file]),
    [[1, "audio_0", "speaker", "one.wav"], [2, "audio_1", "speaker", "two.wav"], [3, "audio_2", "speaker", "three.wav"], [4, "audio_3", "speaker", "four.wav"]]);
  assert.deepEqual(info.warnings, []);
});

test("a listener between speakers keeps every later character's number", () => {
  const info = characterAudio(viewOfWorkflow(withoutAudio(fourSpeakers(), 1)), 3);
  assert.deepEqual(info.rows.map((r) => [r.character, r.role, r.source?.file ?? null]),
    [[1, "speaker", "one.wav"], [2, "listener", null], [3, "speaker", "three.wav"], [4, "speaker", "four.wav"]]);
  assert.deepEqual(info.warnings, []);
});

test("characters after the last connected audio are listeners too", () => {
  const wf = withoutAudio(withoutAudio(fourSpeakers(), 3), 2);
  const info = characterAudio(viewOfWorkflow(wf), 3);
  assert.deepEqual(info.rows.map((r) => r.role), ["speaker", "speaker", "listener", "listener"]);
});

test("nobody speaking needs a duration", () => {
  let wf = fourSpeakers();
  for (const k of [0, 1, 2, 3]) wf = withoutAudio(wf, k);
  assert.match(characterAudio(viewOfWorkflow(wf), 3).warnings.join("\n"), /Nobody speaks: .*set its duration/);
  wf.nodes.find((n) => n.id === 5).widgets_values[2] = 6.5;
  assert.deepEqual(characterAudio(viewOfWorkflow(wf), 3).warnings, []);
});

test("one file for both speakers and too few characters are warned about", () => {
  const wf = twoSpeakers();
  wf.nodes.find((n) => n.id === 7).widgets_values[0] = "alice.wav";
  wf.nodes.find((n) => n.id === 3).widgets_values[0] = 1;
  const w = characterAudio(viewOfWorkflow(wf), 3).warnings.join("\n");
  assert.match(w, /Characters 1 and 2 all play alice\.wav/);
  assert.match(w, /audio_1 is connected but characters = 1/);
});

test("masks that reach no audio encoder say how to wire them", () => {
  const wf = twoSpeakers();
  wf.links = wf.links.filter((l) => l[0] !== 13);
  const info = characterAudio(viewOfWorkflow(wf), 3);
  assert.equal(info.encoder, null);
  assert.match(info.warnings[0], /No 'Avatar Audio Encode' found/);
});

test("a Reroute node between the encoder and the sampler is looked through", () => {
  const wf = twoSpeakers();
  wf.nodes.push({ id: 20, type: "Reroute", inputs: [{ name: "", type: "*", link: 30 }], outputs: [{ name: "", type: "*", links: [13] }] });
  wf.links = wf.links.filter((l) => l[0] !== 13).concat([[30, 5, 0, 20, 0, "*"], [13, 20, 0, 9, 1, "*"]]);
  assert.equal(characterAudio(viewOfWorkflow(wf), 3).encoder, 5);
});
