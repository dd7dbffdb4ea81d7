import assert from "node:assert/strict";
import { test } from "node:test";
import { characterAudio, viewOfWorkflow } from "../../js/lib/wiring.js";
import { twoSpeakers } from "./fixtures.mjs";

test("audio_k drives character k + 1, through the sampler", () => {
  const info = characterAudio(viewOfWorkflow(twoSpeakers()), 3);
  assert.equal(info.encoder, 5);
  assert.equal(info.characters, 2);
  assert.deepEqual(info.rows.map((r) => [r.character, r.input, r.source?.file]), [[1, "audio_0", "alice.wav"], [2, "audio_1", "bob.wav"]]);
  assert.deepEqual(info.warnings, []);
});

test("a missing second track is named with the input to connect", () => {
  const wf = twoSpeakers();
  wf.links = wf.links.filter((l) => l[0] !== 12);
  wf.nodes.find((n) => n.id === 5).inputs[2].link = null;
  const info = characterAudio(viewOfWorkflow(wf), 3);
  assert.equal(info.rows[1].source, null);
  assert.match(info.warnings.join("\n"), /Character 2 has no audio: connect audio_1/);
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
