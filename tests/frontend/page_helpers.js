// Injected into the ComfyUI page by e2e.mjs: build the two-speaker graph, queue only the face-mask node,
// and read back what the extension drew. Plain script (defines window.hyavatarTest).
window.hyavatarTest = (() => {
  const api = window.comfyAPI.api.api;
  const faceNode = () => app.graph._nodes.find((n) => n.comfyClass === "AvatarFaceMasks");

  function legendStateOne(node) {
    const root = node?.widgets?.find((w) => w.name === "character_overlay")?.element;
    if (!root) return { found: false };
    const img = root.querySelector("img");
    const canvas = root.querySelector("canvas.hyavatar-legend");
    const colours = new Set();
    if (canvas?.width) {
      const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < px.length; i += 4) colours.add(`#${[px[i], px[i + 1], px[i + 2]].map((v) => v.toString(16).padStart(2, "0")).join("")}`);
    }
    const shown = img?.getBoundingClientRect();
    return {
      found: true,
      attached: root.isConnected,
      imgShownPx: shown ? [Math.round(shown.width), Math.round(shown.height)] : [0, 0],
      overlayLoaded: !!(img && img.style.display !== "none" && img.complete && img.naturalWidth > 0),
      overlayProperty: (node.properties?.hyavatar_overlay?.image ?? "").slice(0, 23),
      characters: node.properties?.hyavatar_overlay?.characters ?? [],
      rows: JSON.parse(canvas?.dataset.rows ?? "[]"),
      warnings: JSON.parse(canvas?.dataset.warnings ?? "[]"),
      legendSize: [canvas?.width ?? 0, canvas?.height ?? 0],
      legendColours: ["#e6194b", "#3cb44b"].filter((c) => colours.has(c)),
    };
  }

  const legendState = () => app.graph._nodes.filter((n) => n.comfyClass === "AvatarFaceMasks").map(legendStateOne);

  function add(type, pos, widgets = {}) {
    const node = LiteGraph.createNode(type);
    node.pos = pos;
    app.graph.add(node);
    for (const [name, value] of Object.entries(widgets)) node.widgets.find((w) => w.name === name).value = value;
    return node;
  }
  const link = (from, slot, to, inputName) => from.connect(slot, to, to.inputs.findIndex((i) => i.name === inputName));

  function buildTwoSpeakers(files) {
    app.graph.clear();
    const image = add("LoadImage", [0, 0], { image: files.image });
    const masks = files.masks.map((m, k) => add("LoadImageMask", [0, 380 + 160 * k], { image: m, channel: "red" }));
    const face = add("AvatarFaceMasks", [360, 0], { characters: 2 });
    link(image, 0, face, "image");
    link(masks[0], 0, face, "masks.mask_0");
    link(masks[1], 0, face, "masks.mask_1");
    const audios = files.audios.map((a, k) => add("LoadAudio", [360, 560 + 150 * k], { audio: a }));
    const enc = add("AvatarAudioEncode", [720, 560]);
    link(audios[0], 0, enc, "audio.audio_0");
    link(audios[1], 0, enc, "audio.audio_1");
    const sampler = add("AvatarSampler", [1080, 0]);
    link(face, 0, sampler, "character_masks");
    link(enc, 0, sampler, "audio_features");
    link(image, 0, sampler, "image");
    app.graph.setDirtyCanvas(true, true);
  }

  /** Convert the graph with the frontend itself, keep the face node and its ancestors, queue that. */
  async function runFaceNode() {
    const { output, workflow } = await app.graphToPrompt();
    const faceId = String(faceNode().id);
    const keep = new Set();
    const visit = (id) => {
      if (keep.has(id)) return;
      keep.add(id);
      for (const v of Object.values(output[id].inputs)) if (Array.isArray(v) && output[String(v[0])]) visit(String(v[0]));
    };
    visit(faceId);
    const prompt = Object.fromEntries([...keep].map((id) => [id, output[id]]));
    if (!LiteGraph.registered_node_types.AvatarFaceMasks.nodeData.output_node) {
      prompt["hyavatar_preview"] = { class_type: "PreviewImage", inputs: { images: [faceId, 1] } };
    }
    const res = await fetch(api.apiURL("/prompt"), {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, client_id: api.clientId, extra_data: { extra_pnginfo: { workflow } } }),
    });
    const body = await res.json();
    return { status: res.status, body, queued: Object.values(prompt).map((n) => n.class_type) };
  }

  return { faceNode, legendStateOne, legendState, buildTwoSpeakers, runFaceNode };
})();
