// Which audio drives which character, read from the graph: the face-mask node's character_masks go to a
// sampler whose audio_features come from "Avatar Audio Encode"; its input audio_k drives character k + 1 (a
// speaker). A character whose audio_k is not connected is a listener: mouth closed, natural idle.
// Works on a small "graph view" so the same code reads the live graph (extension) and saved workflow JSON
// (node tests, example workflows).

export const FACE_NODE = "AvatarFaceMasks";
export const AUDIO_NODE = "AvatarAudioEncode";
const MASKS_TYPE = "HYAVATAR_CHARACTER_MASKS";
const FEATURES_TYPE = "HYAVATAR_AUDIO_FEATURES";
const AUDIO_INPUT = /(?:^|\.)audio_(\d+)$/; // V3 autogrow names inputs "audio.audio_0", "audio.audio_1", ...
const PASS_THROUGH = new Set(["Reroute", "PrimitiveNode"]);

// widgets_values of a saved workflow are positional; these are the names we read.
const WIDGET_ORDER = { LoadAudio: ["audio"], [FACE_NODE]: ["characters", "face_scale"], [AUDIO_NODE]: ["start_offsets", "fps", "duration"] };

/** Graph view of a saved workflow (the JSON ComfyUI writes, or app.graph.serialize()). */
export function viewOfWorkflow(workflow) {
  const nodes = new Map();
  for (const n of workflow.nodes ?? []) {
    const names = WIDGET_ORDER[n.type] ?? [];
    const values = Array.isArray(n.widgets_values) ? n.widgets_values : [];
    nodes.set(n.id, {
      id: n.id, type: n.type, title: n.title ?? n.type,
      inputs: (n.inputs ?? []).map((i) => ({ name: i.name, type: i.type, link: i.link ?? null })),
      outputs: (n.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: o.links ?? [] })),
      widget: (name) => (names.indexOf(name) >= 0 ? values[names.indexOf(name)] : undefined),
    });
  }
  const links = new Map();
  for (const l of workflow.links ?? []) {
    const [id, origin, originSlot, target, targetSlot] = Array.isArray(l) ? l : [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot];
    links.set(id, { origin, originSlot, target, targetSlot });
  }
  return { nodes, links };
}

/** Graph view of the live LiteGraph graph (app.graph). */
export function viewOfGraph(graph) {
  const nodes = new Map();
  for (const n of graph._nodes ?? graph.nodes ?? []) {
    nodes.set(n.id, {
      id: n.id, type: n.comfyClass ?? n.type, title: n.title ?? n.type,
      inputs: (n.inputs ?? []).map((i) => ({ name: i.name, type: i.type, link: i.link ?? null })),
      outputs: (n.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: o.links ?? [] })),
      widget: (name) => n.widgets?.find((w) => w.name === name)?.value,
    });
  }
  const links = new Map();
  const all = graph.links instanceof Map ? graph.links.values() : Object.values(graph.links ?? {});
  for (const l of all) if (l) links.set(l.id, { origin: l.origin_id, originSlot: l.origin_slot, target: l.target_id, targetSlot: l.target_slot });
  return { nodes, links };
}

/** The node feeding input link `linkId`, looking through reroutes. */
function upstream(view, linkId, hops = 0) {
  const link = view.links.get(linkId);
  const node = link && view.nodes.get(link.origin);
  if (node && PASS_THROUGH.has(node.type) && hops < 16 && node.inputs[0]?.link != null) {
    return upstream(view, node.inputs[0].link, hops + 1);
  }
  return node ?? null;
}

function downstream(view, node, slot, hops = 0) {
  const out = [];
  for (const id of node.outputs[slot]?.links ?? []) {
    const target = view.nodes.get(view.links.get(id)?.target);
    if (target && PASS_THROUGH.has(target.type) && hops < 16) out.push(...downstream(view, target, 0, hops + 1));
    else if (target) out.push(target);
  }
  return out;
}

/** The Avatar Audio Encode node whose features go where this face node's masks go (or null). */
export function findAudioEncoder(view, faceNode) {
  const slot = Math.max(faceNode.outputs.findIndex((o) => o.type === MASKS_TYPE), 0);
  for (const consumer of downstream(view, faceNode, slot)) {
    for (const input of consumer.inputs) {
      if (input.type !== FEATURES_TYPE || input.link == null) continue;
      const enc = upstream(view, input.link);
      if (enc?.type === AUDIO_NODE) return enc;
    }
  }
  return null;
}

/** {encoder, characters, rows: [{character, input, source, role}], warnings} for one face-mask node; role is
 * "speaker" (its audio_k is connected) or "listener". */
export function characterAudio(view, faceNodeId) {
  const face = view.nodes.get(faceNodeId);
  const characters = Math.max(1, Number(face?.widget("characters")) || 1);
  const encoder = face ? findAudioEncoder(view, face) : null;
  const sources = new Map(); // character index (0-based) -> source node summary
  for (const input of encoder?.inputs ?? []) {
    const m = AUDIO_INPUT.exec(input.name);
    if (!m || input.link == null) continue;
    const node = upstream(view, input.link);
    if (node) sources.set(Number(m[1]), { nodeId: node.id, type: node.type, title: node.title, file: node.type === "LoadAudio" ? node.widget("audio") ?? null : null });
  }
  const count = Math.max(characters, ...[...sources.keys()].map((k) => k + 1));
  const rows = Array.from({ length: count }, (_, k) => {
    const source = sources.get(k) ?? null;
    return { character: k + 1, input: `audio_${k}`, source, role: source ? "speaker" : "listener" };
  });
  return { encoder: encoder?.id ?? null, characters, rows, warnings: wiringWarnings(encoder, characters, rows) };
}

function wiringWarnings(encoder, characters, rows) {
  if (!encoder) return ["No 'Avatar Audio Encode' found: connect character_masks and audio_features to the same Avatar Sampler to see which audio drives each character."];
  const out = [];
  if (!rows.some((r) => r.source) && !(Number(encoder.widget("duration")) > 0)) {
    out.push("Nobody speaks: connect a speaker's audio (audio_0 = character 1) on Avatar Audio Encode, or set its duration for a video where every character listens.");
  }
  for (const r of rows) {
    if (r.character > characters && r.source) out.push(`${r.input} is connected but characters = ${characters}: set characters to ${r.character} or disconnect it.`);
  }
  const byFile = new Map();
  for (const r of rows) if (r.source?.file) byFile.set(r.source.file, [...(byFile.get(r.source.file) ?? []), r.character]);
  for (const [file, chars] of byFile) if (chars.length > 1) out.push(`Characters ${chars.join(" and ")} all play ${file}: pick a different file for each speaker.`);
  return out;
}
