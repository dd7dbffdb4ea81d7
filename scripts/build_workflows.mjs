// Realise the example workflow specs in the real ComfyUI frontend (headless Chromium) and print what it
// serialises (UI format) and what it queues (API format). Used by scripts/build_workflows.py.
// Usage: node scripts/build_workflows.mjs URL PLANS.json  (needs tests/frontend/node_modules/playwright-core)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "../tests/frontend/node_modules/playwright-core/index.mjs";

const [url, planFile] = process.argv.slice(2);
const plans = JSON.parse(fs.readFileSync(planFile, "utf8"));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "hyavatar-build-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1600, height: 1000 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const errors = [];
const out = {};
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.AvatarSampler, null,
    { timeout: 120000 });
  // The frontend loads its default workflow after start-up: wait for it, or it would land in the first plan.
  await page.waitForFunction(() => window.app.graph.nodes.length > 0, null, { timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(1500);
  for (const plan of plans) out[plan.name] = await page.evaluate(build, plan);
} catch (e) {
  errors.push(String(e.stack ?? e));
} finally {
  await context.close();
}
console.log(JSON.stringify({ errors, workflows: out }));

async function build(plan) {
  // Columns side by side, each as wide as its widest node; in a column the nodes stacked in row order, each as
  // tall as it is (title bar included): no node covers another, whatever the widgets made their sizes.
  function layOut(plan, byKey) {
    const TITLE = LiteGraph.NODE_TITLE_HEIGHT ?? 30, GAP_Y = 40, GAP_X = 80;
    const columns = new Map();
    for (const n of plan.nodes) if (byKey[n.key]) columns.set(n.col, [...(columns.get(n.col) ?? []), n]);
    let x = 0;
    for (const col of [...columns.keys()].sort((a, b) => a - b)) {
      const nodes = columns.get(col).sort((a, b) => a.row - b.row).map((n) => byKey[n.key]);
      let y = TITLE + 40;  // room for the group title above the first node
      for (const node of nodes) {
        // An image loader's preview can arrive after this: give it the height it then takes.
        if (["LoadImage", "LoadImageMask"].includes(node.type)) node.size = [node.size[0], Math.max(node.size[1], 320)];
        node.pos = [x, y];
        y += node.size[1] + TITLE + GAP_Y;
      }
      x += Math.max(...nodes.map((node) => node.size[0])) + GAP_X;
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  app.graph.clear();
  const byKey = {};
  const problems = [];
  for (const n of plan.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) { problems.push(`unknown node type ${n.type}`); continue; }
    node.pos = [n.col * 420, n.row * 230];
    if (n.title) node.title = n.title;
    if (n.models?.length) node.properties = { ...(node.properties ?? {}), models: n.models };  // Missing Models panel
    app.graph.add(node);
    byKey[n.key] = node;
    for (const [name, value] of n.widgets) {  // in order: a dynamic combo adds its children when set
      await sleep(0);
      const w = node.widgets?.find((x) => x.name === name);
      if (!w) { problems.push(`${n.type}: no widget ${name} (has ${node.widgets?.map((x) => x.name)})`); continue; }
      w.value = value;
      w.callback?.(value, app.canvas, node);
    }
    if (n.type === "Note") node.size = [420, 300];
  }
  await sleep(200);
  for (const [from, slot, to, input] of plan.links) {
    const target = byKey[to];
    const index = target.inputs.findIndex((i) => i.name === input);
    if (index < 0) { problems.push(`${target.type}: no input ${input} (has ${target.inputs.map((i) => i.name)})`); continue; }
    if (!byKey[from].connect(slot, target, index)) problems.push(`could not link ${from}:${slot} -> ${to}.${input}`);
    await sleep(50);
  }
  // Nodes grow after they are made (image previews arriving, widgets the frontend adds): lay out once no size
  // changed for a while, and again if one changes after that.
  const sizes = () => JSON.stringify(Object.values(byKey).map((n) => [n.size[0], n.size[1]]));
  for (let round = 0; round < 3; round++) {
    let last = sizes();
    for (let i = 0, still = 0; i < 60 && still < 4; i++) {
      await sleep(250);
      const now = sizes();
      still = now === last ? still + 1 : 0;
      last = now;
    }
    layOut(plan, byKey);
    await sleep(500);
    if (sizes() === last) break;
  }
  for (const g of plan.groups) {
    const members = g.keys.map((k) => byKey[k]).filter(Boolean);
    const x0 = Math.min(...members.map((m) => m.pos[0])) - 20, y0 = Math.min(...members.map((m) => m.pos[1])) - 60;
    const x1 = Math.max(...members.map((m) => m.pos[0] + m.size[0])) + 20;
    const y1 = Math.max(...members.map((m) => m.pos[1] + m.size[1])) + 20;
    const Group = LiteGraph.LGraphGroup ?? window.LGraphGroup ?? window.comfyAPI?.litegraph?.LGraphGroup;
    if (!Group) { problems.push("no LGraphGroup class in this frontend"); break; }
    const group = new Group(g.title);
    group.pos = [x0, y0];
    group.size = [x1 - x0, y1 - y0];
    app.graph.add(group);
  }
  await sleep(300);
  const workflow = app.graph.serialize();
  workflow.extra = { ...(workflow.extra ?? {}), info: { description: plan.description } };
  const prompt = (await app.graphToPrompt()).output;
  return { workflow, prompt, problems };
}
