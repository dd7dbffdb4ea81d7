// A saved two-speaker workflow, trimmed to the nodes and links the wiring reader looks at.
// 3 AvatarFaceMasks -> 9 AvatarSampler <- 5 AvatarAudioEncode <- 6/7 LoadAudio
export function twoSpeakers() {
  return {
    nodes: [
      { id: 3, type: "AvatarFaceMasks", widgets_values: [2, 3.0], inputs: [{ name: "image", type: "IMAGE", link: null }],
        outputs: [{ name: "character_masks", type: "HYAVATAR_CHARACTER_MASKS", links: [10] }, { name: "preview", type: "IMAGE", links: [] }] },
      { id: 5, type: "AvatarAudioEncode", widgets_values: ["0", "25", 0],
        inputs: [{ name: "whisper", type: "HYAVATAR_WHISPER", link: null }, { name: "audio.audio_0", type: "AUDIO", link: 11 },
          { name: "audio.audio_1", type: "AUDIO", link: 12 }, { name: "audio.audio_2", type: "AUDIO", link: null }],
        outputs: [{ name: "audio_features", type: "HYAVATAR_AUDIO_FEATURES", links: [13] }, { name: "num_frames", type: "INT", links: [] }] },
      { id: 6, type: "LoadAudio", widgets_values: ["alice.wav", null, null], outputs: [{ name: "AUDIO", type: "AUDIO", links: [11] }] },
      { id: 7, type: "LoadAudio", widgets_values: ["bob.wav", null, null], outputs: [{ name: "AUDIO", type: "AUDIO", links: [12] }] },
      { id: 9, type: "AvatarSampler", inputs: [{ name: "face_masks", type: "HYAVATAR_CHARACTER_MASKS", link: 10 },
        { name: "audio_features", type: "HYAVATAR_AUDIO_FEATURES", link: 13 }], outputs: [] },
    ],
    links: [
      [10, 3, 0, 9, 0, "HYAVATAR_CHARACTER_MASKS"], [11, 6, 0, 5, 1, "AUDIO"], [12, 7, 0, 5, 2, "AUDIO"],
      [13, 5, 0, 9, 1, "HYAVATAR_AUDIO_FEATURES"],
    ],
  };
}

// Four characters (the four-speaker template's wiring): 3 AvatarFaceMasks (characters 4) -> 9 AvatarSampler <-
// 5 AvatarAudioEncode <- LoadAudio 6, 7, 8, 10 on audio_0 .. audio_3.
export function fourSpeakers() {
  const files = ["one.wav", "two.wav", "three.wav", "four.wav"];
  const loaders = [6, 7, 8, 10];
  return {
    nodes: [
      { id: 3, type: "AvatarFaceMasks", widgets_values: [4, 3.0], inputs: [{ name: "image", type: "IMAGE", link: null }],
        outputs: [{ name: "character_masks", type: "HYAVATAR_CHARACTER_MASKS", links: [20] }, { name: "preview", type: "IMAGE", links: [] }] },
      { id: 5, type: "AvatarAudioEncode", widgets_values: ["0, 2, 4, 6", "25", 0],
        inputs: [{ name: "whisper", type: "HYAVATAR_WHISPER", link: null },
          ...loaders.map((_, k) => ({ name: `audio.audio_${k}`, type: "AUDIO", link: 21 + k })),
          { name: "audio.audio_4", type: "AUDIO", link: null }],
        outputs: [{ name: "audio_features", type: "HYAVATAR_AUDIO_FEATURES", links: [25] }, { name: "num_frames", type: "INT", links: [] }] },
      ...loaders.map((id, k) => ({ id, type: "LoadAudio", widgets_values: [files[k], null, null], outputs: [{ name: "AUDIO", type: "AUDIO", links: [21 + k] }] })),
      { id: 9, type: "AvatarSampler", inputs: [{ name: "character_masks", type: "HYAVATAR_CHARACTER_MASKS", link: 20 },
        { name: "audio_features", type: "HYAVATAR_AUDIO_FEATURES", link: 25 }], outputs: [] },
    ],
    links: [
      [20, 3, 0, 9, 0, "HYAVATAR_CHARACTER_MASKS"], ...loaders.map((id, k) => [21 + k, id, 0, 5, 1 + k, "AUDIO"]),
      [25, 5, 0, 9, 1, "HYAVATAR_AUDIO_FEATURES"],
    ],
  };
}

/** `wf` with audio_k of the encoder disconnected (that character listens). */
export function withoutAudio(wf, k) {
  const encoder = wf.nodes.find((n) => n.type === "AvatarAudioEncode");
  const input = encoder.inputs.find((i) => i.name === `audio.audio_${k}`);
  wf.links = wf.links.filter((l) => l[0] !== input.link);
  input.link = null;
  return wf;
}
