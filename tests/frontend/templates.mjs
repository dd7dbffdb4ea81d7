// Browser side of tests/test_frontend_templates.py: open each of the pack's templates the way the Templates
// browser does (the frontend's own template loader, through its ?template=&source= URL) in headless chromium,
// and report what the page then shows: page errors, the error panel's text (\"View details\": the Missing Models list
// with each file's folder), the urls its Download buttons open, and screenshots per template.
// Usage: node templates.mjs CONFIG.json -> one JSON line. Config: {url, source, templates: [names], outDir}.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "hyavatar-templates-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1600, height: 1000 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { templates: [] };
try {
  await fetch(`${cfg.url}/api/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  for (const name of cfg.templates) {
    const page = await context.newPage();
    const pageErrors = [];
    const errors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(`${cfg.url}/?template=${encodeURIComponent(name)}&source=${encodeURIComponent(cfg.source)}`);
    await page.waitForFunction(() => window.app?.graph?.nodes?.length > 3, null, { timeout: 120000 });
    await page.waitForTimeout(4000);  // the missing-model scan runs after the load
    const graph = await page.evaluate(() => ({
      nodes: app.graph.nodes.length, title: app.workflowManager?.activeWorkflow?.filename ?? null,
      images: app.graph.nodes.filter((n) => ["LoadImage", "LoadAudio", "LoadImageMask"].includes(n.type))
        .map((n) => ({ type: n.type, value: n.widgets?.[0]?.value, options: n.widgets?.[0]?.options?.values ?? [] })),
      // What the canvas draws for each node, title bar included: [x, y, width, height].
      boxes: app.graph.nodes.map((n) => ({ id: n.id, type: n.type, title: n.title,
        rect: Array.from(n.boundingRect ?? n.getBounding()) })),
      combos: app.graph.nodes.filter((n) => n.type === "AvatarInsightFaceLoader").map((n) => {
        const w = n.widgets?.find((x) => x.name === "model_name");
        return { value: w?.value, options: typeof w?.options?.values === "function" ? w.options.values() : (w?.options?.values ?? []) };
      }),
      // the per-character legend(s) of the mask node: who is who, as the extension drew it
      legends: [...document.querySelectorAll("canvas.hyavatar-legend")].map((c) => JSON.parse(c.dataset.rows ?? "null")),
    }));
    const overlay = await page.evaluate(() => document.body.innerText);
    await page.screenshot({ path: path.join(cfg.outDir, `template_${name}.png`) });
    const details = page.getByRole("button", { name: "View details" });
    if (await details.count()) {
      await details.first().click();
      await page.waitForTimeout(2500);
    }
    const text = await page.evaluate(() => document.body.innerText);
    await page.screenshot({ path: path.join(cfg.outDir, `template_${name}_errors.png`) });
    // Press every "Download" button of the Missing Models panel; the frontend opens the url through an <a>
    // click, which we record instead of following (no network here).
    await page.evaluate(() => {
      window.__opened = [];
      HTMLAnchorElement.prototype.click = function () { window.__opened.push(this.href); };
    });
    const buttons = page.locator('button[aria-label^="Download "]');  // one per file: "Download <name>"
    const downloads = {};
    for (let i = 0; i < (await buttons.count()); i++) {
      const file = (await buttons.nth(i).getAttribute("aria-label")).slice("Download ".length);
      await buttons.nth(i).click();
      await page.waitForTimeout(200);
      downloads[file] = await page.evaluate(() => window.__opened.pop() ?? null);
    }
    result.templates.push({ name, pageErrors, errors, graph, overlay, text, downloads });
    await page.close();
  }
} catch (e) {
  result.error = String(e.stack ?? e);
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
