// browser_page.mjs — what the pack's browser checks share: the real ComfyUI page in headless Debian
// chromium (playwright-core, no browser download), opened the way ../shared/comfyui/ui_check.mjs opens
// it (user settings written through /api/settings before the page loads), every error the page or the
// server reports, and the layout of the graph as it is drawn (node boxes, title colours, badges) in
// either render mode: the classic canvas or "Nodes 2.0" (Comfy.VueNodes.Enabled, one DOM element per node).
//
// Options both scripts take (see parseArgs):
//   --url URL  --out DIR  --chromium PATH  --timeout MS  --viewport WIDTHxHEIGHT (1600x1000)
//   --setting KEY=JSON      (repeatable) a user setting, e.g. Comfy.VueNodes.Enabled=true
//   --allow-404 PATH        (repeatable) a server route this frontend calls that the backend lacks
//   --allow-console TEXT    (repeatable) a console error the frontend logs about such a route

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const MULTI = new Set(["setting", "allow-404", "allow-console", "example"]);
/** The name the pack's web/dicetalk.js registers its extension under. */
const PACK_EXTENSION = "dicetalk.emotion_timeline";

/** `--key value` pairs; the keys in MULTI may repeat and give lists. */
export function parseArgs(argv) {
  const args = Object.fromEntries([...MULTI].map((key) => [key, []]));
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (argv[i + 1] === undefined) throw new Error(`--${key} needs a value`);
    if (MULTI.has(key)) args[key].push(argv[i + 1]);
    else args[key] = argv[i + 1];
  }
  return args;
}

function loadPlaywright() {
  const require = createRequire(import.meta.url);
  for (const dir of [process.env.UI_CHECK_NODE_MODULES, ...(process.env.NODE_PATH || "").split(":")].filter(Boolean)) {
    const p = path.join(dir, "playwright-core");
    if (fs.existsSync(path.join(p, "package.json"))) return require(p);
  }
  throw new Error("playwright-core not found: set UI_CHECK_NODE_MODULES to DEST/ui/node_modules");
}

// What a fresh user dir of ComfyUI 0.3.64 answers with 404 (no user.css, no saved templates or workflows yet).
const BENIGN_HTTP = [
  /\/api\/userdata\/user\.css$/,
  /\/user\.css$/,
  /\/api\/userdata\/comfy\.templates\.json$/,
  /\/api\/userdata\?dir=/,
];
// Frontend 1.27.10 throws this at every start: a setting's onChange runs before the setting is registered.
const benignPageError = (e) => /reading 'id'/.test(e.message) && /addSetting/.test(e.stack || "");

/**
 * Opens the app: settings first (Comfy.TutorialCompleted, so no first-visit template browser covers the
 * graph, then each --setting), then the page, until the app has a graph and the node types are registered.
 * @returns {Promise<{browser, page, report, step: (name: string, data?: object) => void}>}
 */
export async function openApp(args, report, label) {
  const url = (args.url || "").replace(/\/$/, "");
  const timeout = Number(args.timeout || 240000);
  const out = path.resolve(args.out || ".");
  fs.mkdirSync(out, { recursive: true });
  Object.assign(report, { ok: false, steps: [], problems: [], console_errors: [], page_errors: [], http_errors: [] });
  report.shots ??= [];
  const step = (name, data = {}) => {
    report.steps.push({ name, t: Date.now(), ...data });
    console.log(`[${label}] ${name}`);
  };
  const allowed404 = args["allow-404"];
  const allowedConsole = args["allow-console"];

  const settings = [["Comfy.TutorialCompleted", "true"], ...args.setting.map((kv) => [kv.split("=")[0], kv.slice(kv.indexOf("=") + 1)])];
  for (const [key, value] of settings) {
    const response = await fetch(`${url}/api/settings/${encodeURIComponent(key)}`, {
      method: "POST",
      body: value,
      headers: { "Content-Type": "application/json" },
    });
    if (!response.ok) throw new Error(`setting ${key}=${value}: HTTP ${response.status}`);
  }
  report.settings = Object.fromEntries(settings.map(([k, v]) => [k, JSON.parse(v)]));

  const { chromium } = loadPlaywright();
  const browser = await chromium.launch({
    executablePath: args.chromium || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const [width, height] = (args.viewport || "1600x1000").split("x").map(Number);
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const origin = new URL(url).origin;
  await page.route("**/*", (route) =>
    route.request().url().startsWith(origin) || /^(data|blob):/.test(route.request().url())
      ? route.continue()
      : route.abort(),
  );
  page.on("console", (m) => {
    const text = m.text();
    if (m.type() !== "error" || /Failed to load resource|ERR_|net::/.test(text)) return; // HTTP: judged below
    if (allowedConsole.some((allowed) => text.includes(allowed))) return;
    report.console_errors.push(text.slice(0, 1500));
  });
  page.on("pageerror", (e) => {
    if (!benignPageError(e)) report.page_errors.push(`${e.message}\n${e.stack || ""}`.slice(0, 1500));
  });
  page.on("response", (r) => {
    const where = new URL(r.url());
    if (r.status() < 400 || !r.url().startsWith(origin) || BENIGN_HTTP.some((re) => re.test(r.url()))) return;
    if (r.status() === 404 && allowed404.includes(where.pathname)) return;
    if (where.pathname === "/api/prompt" && r.request().method() === "POST") return; // node errors: in the report
    report.http_errors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });

  await page.goto(`${url}/`, { waitUntil: "domcontentloaded", timeout });
  await page.waitForFunction(
    () =>
      window.app?.graph && window.app.canvas && Object.keys(window.LiteGraph?.registered_node_types || {}).length > 50,
    null,
    { timeout },
  );
  await page.waitForTimeout(1000);
  report.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  report.extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
  if (!report.extensions.includes(PACK_EXTENSION))
    report.problems.push(`the pack's web extension ${PACK_EXTENSION} is not loaded (is web/ served by this server?)`);
  step("app ready", { frontend: report.frontend });
  return { browser, page, step, out, timeout };
}

/** Writes the report, turning the errors into problems; exit code 0 when there is none. */
export function finish(report, out, label) {
  if (report.page_errors.length) report.problems.push(`page errors:\n${report.page_errors.join("\n")}`);
  if (report.console_errors.length) report.problems.push(`console errors:\n${report.console_errors.join("\n")}`);
  if (report.http_errors.length) report.problems.push(`HTTP errors:\n${report.http_errors.join("\n")}`);
  report.ok = report.problems.length === 0;
  fs.writeFileSync(path.join(out, "report.json"), JSON.stringify(report, null, 2));
  console.log(report.ok ? `[${label}] OK` : `[${label}] FAILED:\n${report.problems.join("\n")}`);
  return report.ok ? 0 : 1;
}

/** True when the page draws nodes as DOM elements ("Nodes 2.0"), false for the classic canvas. */
export const domNodes = (page) => page.evaluate(() => document.querySelectorAll(".lg-node[data-node-id]").length > 0);

/**
 * Every node's box in graph units, as drawn: in Nodes 2.0 the node's DOM element; on the canvas the
 * node's bounding rectangle (title included) plus the badge row drawn above the title.
 * @returns {Promise<{id: string, type: string, box: number[]}[]>} box = [x, y, width, height]
 */
export const nodeBoxes = (page) =>
  page.evaluate(() => {
    const canvas = window.app.canvas;
    const frame = canvas.canvas.getBoundingClientRect();
    const { scale, offset } = canvas.ds;
    const elements = new Map(
      [...document.querySelectorAll(".lg-node[data-node-id]")].map((e) => [e.dataset.nodeId, e.getBoundingClientRect()]),
    );
    const badgeRow = 24;
    return window.app.graph.nodes.map((node) => {
      const rect = elements.get(String(node.id));
      let box;
      if (rect) {
        box = [(rect.left - frame.left) / scale - offset[0], (rect.top - frame.top) / scale - offset[1]];
        box.push(rect.width / scale, rect.height / scale);
      } else {
        const [x, y, w, h] = node.boundingRect;
        const above = node.badges?.length ? badgeRow : 0;
        box = [x, y - above, w, h + above];
      }
      return { id: String(node.id), type: node.type, box: box.map((v) => Math.round(v * 10) / 10) };
    });
  });

/** Pairs of nodes whose boxes share more than a pixel in each direction. */
export function overlaps(boxes) {
  const found = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i].box, boxes[j].box];
      const dx = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
      const dy = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
      if (dx > 1 && dy > 1) found.push({ a: `${boxes[i].id} ${boxes[i].type}`, b: `${boxes[j].id} ${boxes[j].type}`, dx, dy });
    }
  }
  return found;
}

/** Zooms and pans so the whole graph fits in the window (at most 1:1), for screenshots of every node. */
export async function fitView(page, boxes) {
  await page.evaluate((boxes) => {
    const canvas = window.app.canvas;
    const frame = canvas.canvas.getBoundingClientRect();
    const left = Math.min(...boxes.map((b) => b.box[0]));
    const top = Math.min(...boxes.map((b) => b.box[1]));
    const right = Math.max(...boxes.map((b) => b.box[0] + b.box[2]));
    const bottom = Math.max(...boxes.map((b) => b.box[1] + b.box[3]));
    // room for what covers the canvas edges: the side bar, the top bars and floating buttons, the minimap
    const margin = { left: 90, top: 110, right: 30, bottom: 230 };
    const scale = Math.min(
      1,
      (frame.width - margin.left - margin.right) / (right - left),
      (frame.height - margin.top - margin.bottom) / (bottom - top),
    );
    canvas.ds.scale = scale;
    canvas.ds.offset = [margin.left / scale - left, margin.top / scale - top];
    canvas.setDirty(true, true);
  }, boxes);
  await page.waitForTimeout(400);
}

/**
 * How each DICE-Talk node looks where the user sees it: the colour behind its title (a canvas pixel on
 * the classic canvas, the computed style of the title bar in Nodes 2.0) and the texts of its badges (the
 * canvas draws them unless it is zoomed out to its low-quality drawing).
 */
export const nodeLooks = (page) =>
  page.evaluate(() => {
    const canvas = window.app.canvas;
    const frame = canvas.canvas.getBoundingClientRect();
    const pixels = canvas.canvas.getContext("2d");
    const ratio = canvas.canvas.width / frame.width;
    const rgb = (text) => (text.match(/\d+(\.\d+)?/g) || []).slice(0, 3).map(Number);
    const hex = (c) => {
      const full = c.length === 4 ? c.replace(/[0-9a-f]/gi, (d) => d + d) : c;
      return [1, 3, 5].map((i) => Number.parseInt(full.slice(i, i + 2), 16));
    };
    // the canvas leaves titles, texts and badges out below its low-quality zoom
    const lowQuality = !document.querySelector(".lg-node[data-node-id]") && !!canvas.low_quality;
    return window.app.graph.nodes
      .filter((n) => n.type.startsWith("DICE"))
      .map((node) => {
        const badges = node.badges.map((b) => (typeof b === "function" ? b() : b).text);
        const element = document.querySelector(`.lg-node[data-node-id="${node.id}"]`);
        let title;
        let shownBadges;
        if (element) {
          // the title bar's own background, or the first one behind it
          let bar = element.querySelector(".lg-node-header") ?? element;
          while (bar !== element && getComputedStyle(bar).backgroundColor === "rgba(0, 0, 0, 0)") bar = bar.parentElement;
          title = rgb(getComputedStyle(bar).backgroundColor);
          shownBadges = badges.filter((text) =>
            [...element.querySelectorAll("*")].some(
              (e) => e.children.length === 0 && e.textContent.trim() === text && e.getBoundingClientRect().width > 0,
            ),
          );
        } else {
          const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] - 12, node.pos[1] - 8]);
          title = [...pixels.getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data.slice(0, 3)];
          shownBadges = lowQuality ? [] : badges; // drawn on the canvas with the node
        }
        return {
          id: String(node.id),
          type: node.type,
          expected_title: node.color ? hex(node.color) : null,
          bgcolor: node.bgcolor ?? null,
          title,
          badges,
          shown_badges: shownBadges,
        };
      });
  });
