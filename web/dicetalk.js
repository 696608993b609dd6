/**
 * comfyui-dicetalk's frontend extension (plain ES modules, no build step, nothing fetched from the
 * internet). Three things:
 *
 * 1. Every DICE-Talk node (id starting with `DICE`) gets the pack's colours, its title tinted by what
 *    it works on (model, audio, emotion, face, video), and a badge naming that family. The colours are
 *    the node's own `color`/`bgcolor` (set when it is created, unless the workflow gives others), which
 *    both render modes draw: the classic canvas and "Nodes 2.0" (one Vue component per node).
 * 2. DICE-Talk Emotion Timeline gets the timeline editor (`timeline_editor.js`) under its `keyframes`
 *    text box. The editor writes the JSON keyframe list documented in `keyframes.js` into that text
 *    box and nothing else; workflows stay plain text and work without this extension.
 * The emotion words and the timeline's numbers come from the pack's `GET /dicetalk/vocabulary` route
 * (`nodes/routes.py`), fetched once before any node is created.
 *
 * 3. DICE-Talk Sampler shows, while it runs, the windows done and the estimated time left in a badge,
 *    from the `progress` events ComfyUI sends over its websocket. (The latent preview of each window
 *    is sent by the Python side with the progress and drawn by ComfyUI itself.) "Nodes 2.0" draws a
 *    node's badges once, when the node is mounted, so there the text shows in a line of its own (a DOM
 *    widget that takes no room on the classic canvas).
 */

import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { clipFrames, clipSource } from "./clip_length.js";
import { PRESETS, setVocabulary } from "./keyframes.js";
import { EDITOR_HEIGHT, TimelineEditor } from "./timeline_editor.js";

const EXTENSION = "dicetalk.emotion_timeline";
const VOCABULARY_ROUTE = "/dicetalk/vocabulary";
const PACK_BODY = "#262330";
const BADGE_COLORS = { fgColor: "#f4eefc", bgColor: "#5b3f8c" };
/** The setting of the frontend's "Nodes 2.0" rendering (one DOM element per node instead of the canvas). */
const NODES_2_SETTING = "Comfy.VueNodes.Enabled";
/** Title colour and badge text per family of nodes. */
const FAMILIES = [
  { test: /Emotion/, title: "#6d3a64", label: "DICE emotion" },
  { test: /Audio/, title: "#2f5d55", label: "DICE audio" },
  { test: /Face|Paste/, title: "#6b5330", label: "DICE face" },
  { test: /Model/, title: "#3b4a6e", label: "DICE model" },
  { test: /./, title: "#4b3d75", label: "DICE video" },
];
const isDice = (type) => typeof type === "string" && type.startsWith("DICE");
const familyOf = (type) => FAMILIES.find((f) => f.test.test(type));

function chain(object, method, after) {
  const before = object[method];
  object[method] = function (...args) {
    const result = before?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

/** Emotion names the server accepts: the preset node's combo (official and saved presets). */
function presetNames() {
  const spec = globalThis.LiteGraph?.registered_node_types?.DICEEmotionPreset?.nodeData?.input?.required?.preset;
  const list = Array.isArray(spec?.[0]) ? spec[0] : spec?.[1]?.options;
  const names = Array.isArray(list) ? list.filter((n) => /^[A-Za-z][\w-]*$/.test(n)) : [];
  return names.length ? names : PRESETS;
}

function graphChanged(node) {
  node.setDirtyCanvas?.(true, true);
  app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
}

function addTimelineEditor(node) {
  const text = node.widgets?.find((w) => w.name === "keyframes");
  if (!text || !vocabularyLoaded) return;
  const editor = new TimelineEditor(node, text, {
    names: presetNames,
    clipSource: () => clipSource(node, (path) => api.apiURL(path)),
    clipFrames,
    changed: () => graphChanged(node),
  });
  const widget = node.addDOMWidget("emotion_timeline", "dicetalk_timeline", editor.element, {
    serialize: false,
    hideOnZoom: true,
    margin: 6,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => EDITOR_HEIGHT,
    getMaxHeight: () => EDITOR_HEIGHT,
    onDraw: () => editor.sync(),
  });
  widget.serialize = false;
  editor.element.addEventListener("wheel", (event) => {
    event.preventDefault();
    app.canvas.processMouseWheel(event); // zoom and pan over the editor as over the rest of the canvas
  });
  node.dicetalkTimeline = editor;
  editor.start();
  chain(node, "onRemoved", () => editor.stop());
  text.options.getMinHeight ??= () => 64;
  const [width, height] = node.computeSize();
  node.setSize([Math.max(width, 480), Math.max(height, 490)]);
}

// ---------------------------------------------------------------------------------------- sampler progress

/** Runs of DICE-Talk Sampler nodes now executing, by node id. */
const runs = new Map();

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/**
 * The sampler badge: `3/8 · ~1 min 20 s left`. Seconds per unit come from the events after the first
 * (the first also carries model loading); with one event so far, from the node's start.
 */
export function etaText(run) {
  if (!run?.max) return "";
  const { value, max } = run;
  if (value >= max) return `${max}/${max} · decoding`;
  let perUnit = null;
  if (run.firstTime != null && value > run.firstValue) perUnit = (run.time - run.firstTime) / (value - run.firstValue);
  else if (value > 0) perUnit = (run.time - run.start) / value;
  const left = perUnit == null ? "estimating" : `~${formatDuration((perUnit * (max - value)) / 1000)} left`;
  return `${value}/${max} · ${left}`;
}

/**
 * The time-left line of a sampler: a DOM widget, empty and without height unless the page draws
 * "Nodes 2.0" and the sampler runs (the classic canvas redraws the badge instead).
 */
function addProgressLine(node) {
  const line = document.createElement("div");
  line.style.cssText =
    "display: none; width: fit-content; padding: 2px 8px; border-radius: 10px; font: 11px/1.4 sans-serif; " +
    `color: ${BADGE_COLORS.fgColor}; background: ${BADGE_COLORS.bgColor};`;
  const widget = node.addDOMWidget("dicetalk_progress", "dicetalk_progress", line, {
    serialize: false,
    margin: 0,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => 0,
    getMaxHeight: () => 0,
  });
  widget.serialize = false;
  node.dicetalkProgress = () => {
    const text = etaText(runs.get(String(node.id)));
    line.textContent = text;
    line.style.display = text && app.extensionManager?.setting?.get?.(NODES_2_SETTING) ? "block" : "none";
  };
}

/** Redraws what shows a sampler's progress: the canvas (badge) and the time-left line. */
function showProgress(node) {
  node?.setDirtyCanvas(true, false);
  node?.dicetalkProgress?.();
}

function samplerNode(id) {
  const node = app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);
  return node?.type === "DICESampler" ? node : null;
}

function watchProgress() {
  api.addEventListener("executing", ({ detail }) => {
    const id = detail == null ? null : String(detail);
    for (const key of [...runs.keys()]) {
      if (key !== id) {
        runs.delete(key);
        showProgress(samplerNode(key));
      }
    }
    if (id !== null && samplerNode(id) && !runs.has(id)) runs.set(id, { start: performance.now(), value: 0, max: 0 });
  });
  api.addEventListener("progress", ({ detail }) => {
    const id = String(detail?.node ?? "");
    const node = samplerNode(id);
    if (!node) return;
    const now = performance.now();
    const run = runs.get(id) ?? { start: now };
    if (run.firstTime == null || detail.value < run.value)
      Object.assign(run, { firstTime: now, firstValue: detail.value });
    Object.assign(run, { value: detail.value, max: detail.max, time: now });
    runs.set(id, run);
    showProgress(node);
  });
  for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
    api.addEventListener(type, () => {
      const nodes = [...runs.keys()].map(samplerNode);
      runs.clear();
      nodes.forEach(showProgress);
    });
  }
}

function addBadge(node, text) {
  const Badge = globalThis.LGraphBadge;
  if (!Badge || !Array.isArray(node.badges)) return;
  node.badges.push(() => new Badge({ text: text(), ...BADGE_COLORS }));
}

// ---------------------------------------------------------------------------------------- registration

/** True once the emotion vocabulary came from the server; without it timelines keep their text box only. */
let vocabularyLoaded = false;

async function loadVocabulary() {
  try {
    const response = await api.fetchApi(VOCABULARY_ROUTE);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    setVocabulary(await response.json());
    vocabularyLoaded = true;
  } catch (err) {
    console.error(
      `DICE-Talk: GET ${VOCABULARY_ROUTE} failed (${err.message}), so the emotion timeline editor is not shown; ` +
        "the keyframes text box works as usual. Check ComfyUI's log for an import error of the pack.",
    );
  }
}

app.registerExtension({
  name: EXTENSION,

  async init() {
    await loadVocabulary();
  },

  async setup() {
    watchProgress();
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === "DICEEmotionTimeline") {
      chain(nodeType.prototype, "onNodeCreated", function () {
        addTimelineEditor(this);
      });
    }
  },

  nodeCreated(node) {
    const type = node.comfyClass ?? node.type;
    if (!isDice(type)) return;
    const family = familyOf(type);
    node.color ||= family.title;
    node.bgcolor ||= PACK_BODY;
    addBadge(node, () => family.label);
    if (type === "DICESampler") {
      addBadge(node, () => etaText(runs.get(String(node.id))));
      addProgressLine(node);
    }
  },
});
