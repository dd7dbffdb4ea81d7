// Loudness summary of a speech track: a peak envelope for a tiny waveform, RMS level, and a verdict that
// makes a silent, clipped or much-too-quiet track obvious before a long render.
// Same definitions as nodes/ui_payloads.py (audio_summary): peak per bucket, RMS in dBFS.

export const SILENT_DB = -60; // below this RMS the track is treated as silence
export const QUIET_DB = -40;  // speech recorded this low barely moves the mouth
export const FLOOR_DB = -120; // RMS of digital silence is reported as this, never -Infinity

/** Average of the channels ([Float32Array, ...]) -> one Float32Array. */
export function mixToMono(channels) {
  if (channels.length === 1) return channels[0];
  const out = new Float32Array(channels[0].length);
  for (const ch of channels) for (let i = 0; i < out.length; i++) out[i] += ch[i] / channels.length;
  return out;
}

/** Peak |sample| in each of `points` equal buckets, in [0, 1]. */
export function envelope(samples, points = 64) {
  const out = new Array(points).fill(0);
  if (!samples.length) return out;
  for (let p = 0; p < points; p++) {
    const start = Math.floor((p * samples.length) / points);
    const end = Math.max(Math.floor(((p + 1) * samples.length) / points), start + 1);
    let peak = 0;
    for (let i = start; i < end && i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
    out[p] = Math.min(peak, 1);
  }
  return out;
}

export function rmsDb(samples) {
  if (!samples.length) return FLOOR_DB;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / samples.length);
  return rms > 0 ? Math.max(20 * Math.log10(rms), FLOOR_DB) : FLOOR_DB;
}

export function peakOf(samples) {
  let peak = 0;
  for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
  return peak;
}

/** Everything the legend shows about one track, from decoded samples. */
export function summarize(samples, sampleRate, points = 64) {
  return {
    duration: samples.length / sampleRate,
    rms_db: rmsDb(samples),
    peak: peakOf(samples),
    envelope: envelope(samples, points),
  };
}

/** 'silent' | 'quiet' | 'clipping' | 'ok' for a summary {rms_db, peak}. */
export function verdict({ rms_db, peak }) {
  if (rms_db < SILENT_DB) return "silent";
  if (peak >= 0.999) return "clipping";
  if (rms_db < QUIET_DB) return "quiet";
  return "ok";
}

/** 4.04 -> '4.0 s'; 65.2 -> '1:05.2'. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - 60 * m).toFixed(1).padStart(4, "0")}`;
}

export function formatLevel(db) {
  return db <= FLOOR_DB ? "-inf dB" : `${Math.round(db)} dB`;
}
