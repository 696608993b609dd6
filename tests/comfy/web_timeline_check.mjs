#!/usr/bin/env node
// web_timeline_check.mjs — the pack's frontend extension in the real ComfyUI page (headless Debian
// chromium through playwright-core, see browser_page.mjs), driven like a user:
//
//   node web_timeline_check.mjs --url http://127.0.0.1:PORT --workflow ui.json --out DIR [--chromium PATH]
//        [--setting KEY=JSON ...] [--allow-404 PATH ...] [--allow-console TEXT ...]
//
// 1. opens the page (user settings first, e.g. Comfy.VueNodes.Enabled=true for "Nodes 2.0"), checks the
//    extension is registered and the DICE nodes show their title colours and badges;
// 2. loads the workflow (UI format, with one DICE-Talk Emotion Timeline whose audio reaches it through
//    Emotion Bank <- Audio Encoder <- Load Audio), replaces that node by a fresh one added the way a user
//    does (double-click the canvas, search, Enter; its keyframes are the default English text) and wires
//    it to the bank and the Preview Any;
// 3. on that node's timeline editor, with real mouse events: "Convert to keyframes", double-clicks
//    the strip twice (two new keyframes), drags both new markers, selects one and sets its emotion and
//    intensity, clicks the strip to move the playhead;
// 4. saves the workflow (app.graph.serialize, what Save writes), loads another graph, loads the saved
//    one back, and reads the value again; clicks "Back to text" and "Back to keyframes"; converts it
//    with app.graphToPrompt;
// 5. queues it like the Run button (app.queuePrompt) and waits for the result, recording the
//    sampler's badge at every progress event (and in Nodes 2.0 every badge text its DOM element shows)
//    and the preview images the app receives (frame
//    interpolation and the video are muted and a Preview Any shows the sampler's fps, to keep it short).
// Writes DIR/report.json and screenshots DIR/timeline_*.png; exit 1 on a page error, console error,
// HTTP error or a step that could not be done (the report says which).

import fs from "node:fs";
import path from "node:path";
import { domNodes, finish, fitView, nodeBoxes, nodeLooks, openApp, parseArgs } from "./browser_page.mjs";

const LABEL = "web_timeline_check";
const args = parseArgs(process.argv.slice(2));
const report = {};
let session;
let page;
const shot = async (name, clip) => {
  const file = path.join(session.out, `timeline_${name}.png`);
  await page.screenshot({ path: file, clip });
  report.shots.push(file);
};

/** A node's box on screen: its DOM element in Nodes 2.0, else from its canvas position (badge row included). */
const screenBox = (type, above = 30, below = 0) =>
  page.evaluate(
    ([type, above, below]) => {
      const node = window.app.graph.nodes.find((n) => n.type === type);
      const element = document.querySelector(`.lg-node[data-node-id="${node.id}"]`);
      if (element) {
        const b = element.getBoundingClientRect();
        return { x: b.left - 10, y: b.top - 10, width: b.width + 20, height: b.height + 20 + below };
      }
      const rect = window.app.canvas.canvas.getBoundingClientRect();
      const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - above]);
      const s = window.app.canvas.ds.scale;
      return { x: rect.left + x, y: rect.top + y, width: node.size[0] * s, height: (node.size[1] + above) * s + below };
    },
    [type, above, below],
  );
const nodeBox = () => screenBox("DICEEmotionTimeline");
/** The texts of the sampler's badges as the user sees them (the DOM in Nodes 2.0, else what the canvas draws). */
const samplerBadges = () =>
  page.evaluate(() => {
    const node = window.app.graph.nodes.find((n) => n.type === "DICESampler");
    const texts = node.badges.map((b) => (typeof b === "function" ? b() : b).text);
    const element = document.querySelector(`.lg-node[data-node-id="${node.id}"]`);
    if (!element) return texts;
    const leaves = [...element.querySelectorAll("*")].filter(
      (e) => e.children.length === 0 && e.getBoundingClientRect().width > 0,
    );
    return texts.map((text) => (leaves.some((e) => e.textContent.trim() === text) ? text : `(not shown: ${text})`));
  });
const value = () =>
  page.evaluate(
    () =>
      window.app.graph.nodes.find((n) => n.type === "DICEEmotionTimeline").widgets.find((w) => w.name === "keyframes")
        .value,
  );
const markers = () =>
  page.$$eval(".dicetalk-tl-marker", (els) =>
    els
      .filter((e) => e.offsetParent)
      .map((e) => {
        const b = e.getBoundingClientRect();
        return {
          index: Number(e.dataset.index),
          x: b.left + b.width / 2,
          y: b.top + b.height / 2,
          selected: e.classList.contains("selected"),
        };
      }),
  );
const stripBox = async () => await page.locator(".dicetalk-tl-strip").first().boundingBox();
const settle = () => page.waitForTimeout(300);

try {
  // ---- 1. the page and the extension
  session = await openApp(args, report, LABEL);
  ({ page } = session);
  const { step } = session;
  await page.evaluate(() => {
    window.__dice = { events: [], previews: 0, shownBadges: [] };
    window.app.api.addEventListener("progress", ({ detail }) => {
      const node = window.app.graph.getNodeById(Number(detail.node));
      const texts =
        node?.type === "DICESampler" ? node.badges.map((b) => (typeof b === "function" ? b() : b).text) : null;
      window.__dice.events.push({ type: "progress", data: detail, badges: texts, t: Date.now() });
    });
    window.app.api.addEventListener("b_preview", () => {
      window.__dice.previews += 1;
    });
    for (const type of [
      "execution_start",
      "execution_success",
      "execution_error",
      "execution_interrupted",
      "executed",
      "executing",
    ]) {
      window.app.api.addEventListener(type, ({ detail }) =>
        window.__dice.events.push({ type, data: detail, t: Date.now() }),
      );
    }
  });

  // ---- 2. the workflow
  const workflow = JSON.parse(fs.readFileSync(args.workflow, "utf8"));
  await page.evaluate(async (wf) => {
    await window.app.loadGraphData(wf, true, true, "timeline_check");
  }, workflow);
  await settle();
  report.dom_nodes = await domNodes(page);
  await fitView(page, await nodeBoxes(page));
  report.node_looks = await nodeLooks(page);
  report.value_loaded = await value();
  report.prompt_loaded = await page.evaluate(async () => (await window.app.graphToPrompt()).output);

  // ---- 2b. a fresh timeline node in place of the workflow's: double-click the empty canvas, search, Enter
  const place = await page.evaluate(() => {
    const old = window.app.graph.nodes.find((n) => n.type === "DICEEmotionTimeline");
    const pos = [...old.pos];
    window.__dice.oldPos = pos;
    window.app.graph.remove(old);
    const ds = window.app.canvas.ds;
    ds.scale = 1;
    ds.offset = [-pos[0] + 110, -pos[1] + 150];
    window.app.canvas.setDirty(true, true);
    // the middle of the empty place: away from the window edges, where a node on the cursor pans the canvas
    const rect = window.app.canvas.canvas.getBoundingClientRect();
    return { x: rect.left + 110 + 200, y: rect.top + 150 + 200 };
  });
  await settle();
  await page.mouse.move(place.x, place.y);
  await settle();
  await page.mouse.dblclick(place.x, place.y, { delay: 50 });
  // the search box: frontend 1.27's PrimeVue autocomplete, or the search dialog of later frontends
  const search = page.locator(".comfy-vue-node-search-box input, [role=search] input").first();
  await search.waitFor({ timeout: 20000 });
  await search.fill("DICE-Talk Emotion Timeline");
  await page
    .locator(".p-autocomplete-option, [role=search] [role=option]", { hasText: "Emotion Timeline" })
    .first()
    .waitFor({ timeout: 20000 });
  await search.press("Enter");
  await page.waitForFunction(() => window.app.graph.nodes.some((n) => n.type === "DICEEmotionTimeline"), null, {
    timeout: 20000,
  });
  // later frontends hang a node added from the search on the cursor until a click places it
  const onCursor = () =>
    page.evaluate(() => !!window.app.graph.nodes.find((n) => n.type === "DICEEmotionTimeline").flags?.ghost);
  report.placed_by_click = await onCursor();
  for (let tries = 0; tries < 5 && (await onCursor()); tries++) {
    await page.mouse.move(place.x + 5, place.y + 5);
    await page.mouse.click(place.x + 5, place.y + 5);
    await settle();
  }
  if (await onCursor()) throw new Error("the node added from the search stayed on the cursor after five clicks");
  report.fresh_node = await page.evaluate(() => {
    const graph = window.app.graph;
    const node = graph.nodes.find((n) => n.type === "DICEEmotionTimeline");
    const bank = graph.nodes.find((n) => n.type === "DICEEmotionBank");
    const preview = graph.nodes.find((n) => n.type === "PreviewAny");
    node.pos = [...window.__dice.oldPos];
    node.connect(
      0,
      bank,
      bank.inputs.findIndex((i) => i.name === "emotion"),
    );
    node.connect(1, preview, 0);
    const ds = window.app.canvas.ds;
    ds.offset = [-node.pos[0] + 110, -node.pos[1] + 150];
    window.app.canvas.setDirty(true, true);
    return { size: [...node.size], value: node.widgets.find((w) => w.name === "keyframes").value };
  });
  step("fresh timeline node added", report.fresh_node);
  // (the editor draws in the shadow root of its widget element; playwright's locators reach into it)
  await page
    .locator(".dicetalk-tl-clip", { hasText: /\b28 frames\b/ })
    .waitFor({ timeout: 20000 })
    .catch(() => report.problems.push("the clip length from the audio (28 frames) was not shown"));
  report.clip_text = await page.locator(".dicetalk-tl-row").first().innerText();
  report.text_panel = await page.locator(".dicetalk-tl-panel").first().innerText();
  await shot("1_text", await nodeBox());
  step("workflow loaded", { value: report.value_loaded });

  // ---- 3. edit with the mouse
  await page.locator(".dicetalk-tl-convert").click();
  await settle();
  report.value_converted = await value();
  report.properties_after_convert = await page.evaluate(
    () => window.app.graph.nodes.find((n) => n.type === "DICEEmotionTimeline").properties,
  );
  step("converted", { value: report.value_converted });

  let strip = await stripBox();
  const xAt = (fraction) => strip.x + fraction * strip.width;
  const yMid = () => strip.y + strip.height * 0.45;
  await page.mouse.dblclick(xAt(0.25), yMid());
  await settle();
  strip = await stripBox();
  await page.mouse.dblclick(xAt(0.75), yMid());
  await settle();
  report.value_added = await value();
  report.markers_added = await markers();
  step("two keyframes added", { markers: report.markers_added.length });

  const drag = async (fromFraction, toFraction) => {
    strip = await stripBox();
    const from = (await markers()).sort(
      (a, b) => Math.abs(a.x - xAt(fromFraction)) - Math.abs(b.x - xAt(fromFraction)),
    )[0];
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    for (let i = 1; i <= 8; i++) await page.mouse.move(from.x + ((xAt(toFraction) - from.x) * i) / 8, from.y + i);
    await page.mouse.up();
    await settle();
  };
  await drag(0.25, 0.4);
  await drag(0.75, 0.9);
  report.value_dragged = await value();
  report.markers_dragged = await markers();
  step("dragged", { value: report.value_dragged });

  strip = await stripBox();
  const target = (await markers()).sort((a, b) => Math.abs(a.x - xAt(0.4)) - Math.abs(b.x - xAt(0.4)))[0];
  await page.mouse.click(target.x, target.y);
  await settle();
  await page.locator(".dicetalk-tl-emotion").first().selectOption("surprised");
  await settle();
  report.emotion_options = await page
    .locator(".dicetalk-tl-emotion")
    .first()
    .evaluate((s) => [...s.options].map((o) => o.value));
  const intensity = page.locator("input.dicetalk-tl-intensity");
  await intensity.click({ clickCount: 3 });
  await intensity.fill("1.3");
  await intensity.press("Enter");
  await page.mouse.click(xAt(0.4) + 2, strip.y + strip.height * 0.6); // the playhead onto the edited keyframe
  await settle();
  report.value_edited = await value();
  report.bars = await page.$$eval(".dicetalk-tl-bar", (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.name, Number(e.dataset.value)])),
  );
  report.playhead_label = (await page.locator(".dicetalk-tl-bars-box").first().innerText()).split("\n")[0];
  await shot("2_edited", await nodeBox());
  await shot("2_canvas");
  step("edited", { value: report.value_edited });

  // ---- 4. save, load another graph, load it back
  const saved = await page.evaluate(() => window.app.graph.serialize());
  fs.writeFileSync(path.join(session.out, "saved_workflow.json"), JSON.stringify(saved, null, 2));
  await page.evaluate(async () => {
    window.app.graph.clear();
    await new Promise((r) => setTimeout(r, 200));
  });
  await page.evaluate(
    async (wf) => window.app.loadGraphData(wf, true, true, "reloaded"),
    JSON.parse(JSON.stringify(saved)),
  );
  await settle();
  report.value_reloaded = await value();
  report.saved_widgets_values = saved.nodes.find((n) => n.type === "DICEEmotionTimeline").widgets_values;
  await page.evaluate(() => {
    const node = window.app.graph.nodes.find((n) => n.type === "DICEEmotionTimeline");
    window.app.canvas.ds.scale = 1;
    window.app.canvas.ds.offset = [-node.pos[0] + 110, -node.pos[1] + 150];
    window.app.canvas.setDirty(true, true);
  });
  await page.waitForTimeout(800);
  report.markers_reloaded = await markers();
  await shot("3_reloaded", await nodeBox());
  step("reloaded", { value: report.value_reloaded });

  // ---- 4b. "Back to text" puts the replaced text back, "Back to keyframes" the edited keyframes
  const restore = page.locator(".dicetalk-tl-restore");
  report.restore_labels = [await restore.innerText()];
  await restore.click();
  await settle();
  report.value_restored = await value();
  report.restore_labels.push(await restore.innerText());
  await restore.click();
  await settle();
  report.value_restored_back = await value();
  report.prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  step("restored and back", { value: report.value_restored });

  // ---- 5. run it (up to the sampler: interpolation and video muted, a Preview Any on the sampler's fps)
  await page.evaluate(() => {
    const graph = window.app.graph;
    const sampler = graph.nodes.find((n) => n.type === "DICESampler");
    for (const node of graph.nodes)
      if (["DICEFrameInterpolation", "CreateVideo", "SaveVideo"].includes(node.type)) node.mode = 2;
    const preview = window.LiteGraph.createNode("PreviewAny");
    const bottom = Math.max(...graph.nodes.map((n) => n.boundingRect[1] + n.boundingRect[3]));
    preview.pos = [sampler.pos[0], bottom + 120]; // below every node: the sampler grows with its preview
    graph.add(preview);
    sampler.connect(2, preview, 0);
  });
  // Nodes 2.0 draws badges as DOM text: record every badge text of the sampler that shows up while it runs
  await page.evaluate(() => {
    const sampler = window.app.graph.nodes.find((n) => n.type === "DICESampler");
    const element = document.querySelector(`.lg-node[data-node-id="${sampler.id}"]`);
    if (!element) return;
    new MutationObserver(() => {
      for (const e of element.querySelectorAll("*")) {
        const text = e.children.length === 0 ? e.textContent.trim() : "";
        if (/ · /.test(text) && !window.__dice.shownBadges.includes(text)) window.__dice.shownBadges.push(text);
      }
    }).observe(element, { subtree: true, childList: true, characterData: true });
  });
  const response = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST", {
    timeout: 60000,
  });
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const body = await (await response).json();
  report.queue_response = body;
  if (!body.prompt_id || Object.keys(body.node_errors || {}).length)
    report.problems.push(`prompt rejected: ${JSON.stringify(body).slice(0, 3000)}`);
  else {
    // the sampler's badge while it runs (best effort: the tiny test model may finish in a few seconds)
    await page
      .waitForFunction(() => window.__dice.events.some((e) => e.badges && e.data.value < e.data.max), null, {
        timeout: session.timeout,
        polling: 50,
      })
      .then(async () => {
        report.badge_while_running = await samplerBadges();
        await shot("4_running", await screenBox("DICESampler", 60, 20));
      })
      .catch((err) => report.steps.push({ name: `no running screenshot: ${err.message.split("\n")[0]}` }));
    const done = await page.waitForFunction(
      (id) =>
        window.__dice.events.find(
          (e) =>
            ["execution_success", "execution_error", "execution_interrupted"].includes(e.type) &&
            e.data?.prompt_id === id,
        ) || null,
      body.prompt_id,
      { timeout: session.timeout, polling: 200 },
    );
    report.status = (await done.jsonValue()).type;
    report.error = (await done.jsonValue()).data;
    report.history = await page.evaluate(
      async (id) => (await (await window.app.api.fetchApi(`/history/${id}`)).json())[id],
      body.prompt_id,
    );
    report.events = await page.evaluate(() => window.__dice.events);
    report.previews = await page.evaluate(() => window.__dice.previews);
    report.shown_badges = await page.evaluate(() => window.__dice.shownBadges);
    report.badges_after = await samplerBadges();
    await page.waitForTimeout(800);
    await shot("4_ran");
  }
  step("ran", { status: report.status });
} catch (err) {
  report.problems.push(`crashed: ${err.stack || err}`);
  if (page) await shot("crash").catch(() => {});
} finally {
  await session?.browser.close();
}
process.exit(finish(report, session?.out ?? path.resolve(args.out || "."), LABEL));
