#!/usr/bin/env node
// web_examples_check.mjs — every example workflow of the pack in the real ComfyUI page, one browser for all:
//
//   node web_examples_check.mjs --url URL --out DIR --pack FOLDER --example NAME [--example NAME ...]
//        [--widgets JSON] [--setting KEY=JSON ...] [--allow-404 PATH ...] [--allow-console TEXT ...]
//
// For each example, as the template browser does: fetch it from /api/workflow_templates/FOLDER/NAME.json and
// load it with app.loadGraphData; record the node types the app reports missing, every node's box as drawn
// (and which boxes overlap), the title colour and badges of each DICE-Talk node, app.graphToPrompt() (before
// anything is changed) and a screenshot of the whole graph. Then set the widgets given by --widgets
// ({"NodeType": {"widget": value}}, as a user would before Run), queue it like the Run button
// (app.queuePrompt) and wait for its end, recording the status, /history outputs, the sampler's progress
// events and the live previews the app received; a second screenshot.
// Writes DIR/report.json (one entry per example) and DIR/<name>_loaded.png, DIR/<name>_run.png;
// exit 1 on a page error, console error, HTTP error or a step that could not be done (see browser_page.mjs).

import path from "node:path";
import { domNodes, finish, fitView, nodeBoxes, nodeLooks, openApp, overlaps, parseArgs } from "./browser_page.mjs";

const LABEL = "web_examples_check";
const args = parseArgs(process.argv.slice(2));
args.viewport ??= "1920x1200"; // the widest example fits above the canvas's low-quality zoom
const widgets = JSON.parse(args.widgets || "{}");
const report = { examples: {} };
let session;

async function shot(name) {
  const file = path.join(session.out, `${name}.png`);
  await session.page.screenshot({ path: file });
  report.shots.push(file);
}

async function load(name) {
  const { page } = session;
  return page.evaluate(
    async ([pack, name]) => {
      window.__dice.missing = null;
      const response = await window.app.api.fetchApi(`/workflow_templates/${pack}/${name}.json`);
      if (!response.ok) throw new Error(`template ${pack}/${name}: HTTP ${response.status}`);
      await window.app.loadGraphData(await response.json(), true, true, name);
      await new Promise((r) => setTimeout(r, 600)); // Nodes 2.0 mounts and measures its node elements
      const unregistered = window.app.graph.nodes
        .filter((n) => !window.LiteGraph.registered_node_types[n.type])
        .map((n) => n.type);
      return [...new Set([...(window.__dice.missing || []), ...unregistered])];
    },
    [args.pack, name],
  );
}

async function run(name, entry) {
  const { page, timeout } = session;
  entry.widgets_set = await page.evaluate((widgets) => {
    const set = [];
    for (const node of window.app.graph.nodes) {
      for (const [widgetName, value] of Object.entries(widgets[node.type] || {})) {
        const widget = node.widgets?.find((w) => w.name === widgetName);
        if (!widget) continue;
        widget.value = value;
        widget.callback?.(value, window.app.canvas, node);
        set.push(`${node.id}.${widgetName}=${JSON.stringify(value)}`);
      }
    }
    window.__dice.events = [];
    window.__dice.previews = 0;
    return set;
  }, widgets);
  const response = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST", {
    timeout: 60000,
  });
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const body = await (await response).json();
  if (!body.prompt_id || Object.keys(body.node_errors || {}).length) {
    report.problems.push(`${name}: prompt rejected: ${JSON.stringify(body).slice(0, 3000)}`);
    return;
  }
  const done = await page.waitForFunction(
    (id) =>
      window.__dice.events.find(
        (e) =>
          ["execution_success", "execution_error", "execution_interrupted"].includes(e.type) && e.data?.prompt_id === id,
      ) || null,
    body.prompt_id,
    { timeout, polling: 200 },
  );
  const end = await done.jsonValue();
  entry.status = end.type;
  if (end.type !== "execution_success") entry.error = end.data;
  entry.history = await page.evaluate(
    async (id) => (await (await window.app.api.fetchApi(`/history/${id}`)).json())[id],
    body.prompt_id,
  );
  Object.assign(
    entry,
    await page.evaluate(() => ({
      sampler_progress: window.__dice.events.filter((e) => e.type === "progress" && e.sampler).length,
      previews: window.__dice.previews,
    })),
  );
  await page.waitForTimeout(800); // previews and outputs drawn before the screenshot
}

try {
  session = await openApp(args, report, LABEL);
  const { page, step } = session;
  await page.evaluate(() => {
    window.__dice = { missing: null, events: [], previews: 0 };
    window.app.registerExtension({
      name: "dicetalk.examples_check",
      afterConfigureGraph(missing) {
        window.__dice.missing = (missing || []).map((m) => (typeof m === "string" ? m : m.type || JSON.stringify(m)));
      },
    });
    window.app.api.addEventListener("progress", ({ detail }) => {
      const node = window.app.graph.getNodeById(Number(detail.node)) ?? window.app.graph.getNodeById(detail.node);
      window.__dice.events.push({ type: "progress", sampler: node?.type === "DICESampler", data: detail });
    });
    window.app.api.addEventListener("b_preview", () => {
      window.__dice.previews += 1;
    });
    for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
      window.app.api.addEventListener(type, ({ detail }) => window.__dice.events.push({ type, data: detail }));
    }
  });
  report.templates = await page.evaluate(async () => (await window.app.api.fetchApi("/workflow_templates")).json());
  for (const name of args.example) {
    const entry = { name };
    report.examples[name] = entry;
    entry.missing_node_types = await load(name);
    entry.dom_nodes = await domNodes(page);
    await fitView(page, await nodeBoxes(page));
    entry.boxes = await nodeBoxes(page);
    entry.overlaps = overlaps(entry.boxes);
    entry.looks = await nodeLooks(page);
    entry.prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    await shot(`${name}_loaded`);
    step(`${name} loaded`, { missing: entry.missing_node_types, overlaps: entry.overlaps.length });
    await run(name, entry);
    await shot(`${name}_run`);
    step(`${name} ran`, { status: entry.status });
  }
} catch (err) {
  report.problems.push(`crashed: ${err.stack || err}`);
  if (session?.page) await shot("crash").catch(() => {});
} finally {
  await session?.browser.close();
}
process.exit(finish(report, session?.out ?? path.resolve(args.out || "."), LABEL));
