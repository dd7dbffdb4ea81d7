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
