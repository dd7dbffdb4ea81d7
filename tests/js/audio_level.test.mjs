import assert from "node:assert/strict";
import { test } from "node:test";
import { envelope, formatDuration, formatLevel, mixToMono, rmsDb, summarize, verdict } from "../../js/lib/audio_level.js";

const sine = (n, amp, rate = 16000, hz = 200) => Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * hz * i) / rate));

test("envelope follows where the sound is", () => {
  const s = new Float32Array(1600);
  s.set(sine(400, 0.5), 800); // sound only in the third quarter
  const env = envelope(s, 4);
  assert.equal(env.length, 4);
  assert.deepEqual(env.map((v) => v > 0.4), [false, false, true, false]);
});

test("envelope of a track shorter than the point count has no gaps past the end", () => {
  const env = envelope(Float32Array.from([0.5, -1, 0.25]), 6);
  assert.equal(env.length, 6);
  assert.ok(env.every((v) => v >= 0 && v <= 1));
  assert.equal(Math.max(...env), 1);
});

test("RMS level in dBFS: full-scale sine is -3 dB, half amplitude -9 dB, silence is the floor", () => {
  assert.ok(Math.abs(rmsDb(sine(16000, 1)) - -3.01) < 0.05);
  assert.ok(Math.abs(rmsDb(sine(16000, 0.5)) - -9.03) < 0.05);
  assert.equal(rmsDb(new Float32Array(100)), -120);
  assert.equal(formatLevel(-120), "-inf dB");
});

test("verdict names silent, quiet, clipping and normal speech", () => {
  assert.equal(verdict(summarize(new Float32Array(16000), 16000)), "silent");
  assert.equal(verdict(summarize(sine(16000, 0.005), 16000)), "quiet");
  assert.equal(verdict(summarize(sine(16000, 1), 16000)), "clipping");
  assert.equal(verdict(summarize(sine(16000, 0.3), 16000)), "ok");
});

test("summary duration and mono mix", () => {
  const s = summarize(new Float32Array(40000), 16000);
  assert.equal(s.duration, 2.5);
  assert.deepEqual([...mixToMono([Float32Array.from([1, 0]), Float32Array.from([0, 0])])], [0.5, 0]);
  assert.equal(formatDuration(4.04), "4.0 s");
  assert.equal(formatDuration(65.2), "1:05.2");
});
