// Browser side of tests/test_frontend_e2e.py: headless Debian chromium against a running ComfyUI with the pack.
// Usage: node e2e.mjs CONFIG.json  -> prints one JSON result line. Config: {url, outDir, workflows: [{name, json}],
// twoSpeakers: {image, masks: [..2], audios: [..2]}}. Screenshots go to outDir.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "hyavatar-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1500, height: 1000 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { errors: [], workflows: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => result.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && /hyavatar|lib\/(wiring|legend|audio_level)/i.test(m.text())) result.errors.push(m.text()); });
  // First visit of a fresh user opens the templates browser over the graph; mark the tutorial as seen.
  await fetch(`${cfg.url}/api/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  // Nodes drawn on the LiteGraph canvas (classic) or as Vue components ("Nodes 2.0"): the test runs both.
  await fetch(`${cfg.url}/api/settings/Comfy.VueNodes.Enabled`, { method: "POST", body: JSON.stringify(!!cfg.vueNodes) });
  result.vueNodes = !!cfg.vueNodes;
  await page.goto(cfg.url);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.AvatarFaceMasks, null, { timeout: 120000 });
  await closeDialogs(page);
  await page.addScriptTag({ path: new URL("./page_helpers.js", import.meta.url).pathname });
  result.extensionLoaded = await page.evaluate(() => app.extensions.some((e) => e.name === "HunyuanVideoAvatar.CharacterOverlay"));
  result.help = await page.evaluate(helpText);

  for (const wf of cfg.workflows) {
    await page.evaluate((json) => app.loadGraphData(json, true, true), wf.json);
    await page.waitForTimeout(1500);
    const prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
    const legends = await page.evaluate(() => hyavatarTest.legendState());
    await page.screenshot({ path: path.join(cfg.outDir, `workflow_${wf.name}.png`) });
    result.workflows.push({ name: wf.name, promptNodes: Object.values(prompt).map((n) => n.class_type), legends });
  }

  // A fresh empty workflow first: graph.clear() alone keeps the previous graph's node outputs, and the Vue
  // renderer then shows a stale image preview on whichever new node reuses an old node id.
  await page.evaluate(() => app.loadGraphData({ nodes: [], links: [], version: 0.4 }, true, true));
  await page.evaluate((f) => hyavatarTest.buildTwoSpeakers(f), cfg.twoSpeakers);
  await page.waitForTimeout(500);
  result.run = await page.evaluate(() => hyavatarTest.runFaceNode());
  await page.waitForFunction(() => {
    const s = hyavatarTest.legendStateOne(hyavatarTest.faceNode());
    return s.overlayLoaded && s.rows.every((r) => r.summary);
  }, null, { timeout: 120000 }).catch((e) => result.errors.push(`overlay/legend not drawn: ${e.message.split("\n")[0]}`));
  await page.waitForTimeout(800);
  result.afterRun = await page.evaluate(() => hyavatarTest.legendStateOne(hyavatarTest.faceNode()));
  await closeDialogs(page);
  await focusFaceNode(page);
  result.afterRunShown = await page.evaluate(() => hyavatarTest.legendStateOne(hyavatarTest.faceNode()));
  result.vueNodesActive = await page.evaluate(() => app.ui.settings.getSettingValue("Comfy.VueNodes.Enabled"));
  await page.screenshot({ path: path.join(cfg.outDir, "two_speakers_after_run.png") });

  // Save and reopen: the overlay must come back from the workflow alone (no run).
  const saved = await page.evaluate(() => JSON.stringify(app.graph.serialize()));
  await page.evaluate(() => app.loadGraphData({ nodes: [], links: [], version: 0.4 }, true, true));
  await page.evaluate((json) => app.loadGraphData(JSON.parse(json), true, true), saved);
  await page.waitForFunction(() => hyavatarTest.faceNode() && hyavatarTest.legendStateOne(hyavatarTest.faceNode()).overlayLoaded, null, { timeout: 30000 })
    .catch((e) => result.errors.push(`overlay not restored: ${e.message.split("\n")[0]}`));
  await page.waitForTimeout(1000);
  result.reopened = await page.evaluate(() => hyavatarTest.legendStateOne(hyavatarTest.faceNode()));
  await focusFaceNode(page);
  await page.screenshot({ path: path.join(cfg.outDir, "two_speakers_reopened.png") });
  result.tooltip = await hoverTooltip(page);
} catch (e) {
  result.errors.push(String(e.stack ?? e));
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));

// ---- page-side helpers (serialised into the page by page.evaluate / addInitScript) ----
function helpText() {
  const out = {};
  for (const [type, cls] of Object.entries(LiteGraph.registered_node_types)) {
    const d = cls.nodeData;
    if (!d || !String(d.python_module ?? "").includes("custom_nodes")) continue;
    if (!type.startsWith("Avatar")) continue;
    const inputs = { ...d.input?.required, ...d.input?.optional };
    out[type] = { description: d.description ?? "", untipped: Object.entries(inputs).filter(([, v]) => !v?.[1]?.tooltip).map(([k]) => k) };
  }
  return out;
}

async function focusFaceNode(page) {
  await page.evaluate(() => {
    const n = hyavatarTest.faceNode();
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [140 - n.pos[0], 90 - n.pos[1]];
    app.graph.setDirtyCanvas(true, true);
  });
  await page.waitForTimeout(600);
}

/** Hover the face node's 'characters' widget: the frontend must show its tooltip text. */
async function hoverTooltip(page) {
  const at = await page.evaluate(() => {
    const n = hyavatarTest.faceNode();
    const w = n.widgets.find((x) => x.name === "characters");
    const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + 60, n.pos[1] + (w.y ?? w.last_y ?? 0) + 8]);
    const r = app.canvas.canvas.getBoundingClientRect();
    return [r.left + x, r.top + y];
  });
  await page.mouse.move(at[0], at[1]);
  await page.mouse.move(at[0] + 2, at[1] + 1);
  await page.waitForTimeout(1500);
  const text = await page.evaluate(() => document.body.innerText);
  return { shown: text.includes("How many characters speak") };
}

/** A fresh profile opens the templates browser on first visit: close it so it hides nothing. */
async function closeDialogs(page) {
  await page.waitForTimeout(1500);
  for (let i = 0; i < 3 && (await page.locator(".p-dialog").count()) > 0; i++) {
    const close = page.locator('.p-dialog button[aria-label="Close"], .p-dialog .p-dialog-close-button');
    if (await close.count()) await close.first().click().catch(() => {});
    else await page.keyboard.press("Escape");
    await page.waitForTimeout(400);
  }
}
