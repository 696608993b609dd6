/**
 * Small DOM helpers, the style sheet and the colours of the emotion timeline editor. The editor lives in
 * a shadow root of its own DOM widget element, so its style sheet styles nothing else on the page (and
 * the page's styles reach it only through inherited properties and CSS variables).
 */

/** Colours of names that are not presets (saved emotions, connected inputs), in order of appearance. */
export const OTHER_COLORS = ["#2dd4bf", "#a3e635", "#fb923c", "#38bdf8"];
/** A colour per preset, for markers, the band and the bars. */
export const EMOTION_COLORS = {
  angry: "#e5484d",
  contempt: "#b08968",
  disgusted: "#65a30d",
  fear: "#8b5cf6",
  happy: "#f5b000",
  neutral: "#94a3b8",
  sad: "#3b82f6",
  surprised: "#ec4899",
};

const STYLE = `<style>
.dicetalk-tl { box-sizing: border-box; width: 100%; height: 100%; display: flex; flex-direction: column; gap: 5px; padding: 4px 2px;
  font: 11px/1.3 sans-serif; color: var(--input-text, #ddd); user-select: none; overflow: hidden; }
.dicetalk-tl * { box-sizing: border-box; }
.dicetalk-tl-row { display: flex; align-items: center; gap: 6px; min-height: 20px; white-space: nowrap; }
.dicetalk-tl-muted { color: var(--descrip-text, #999); overflow: hidden; text-overflow: ellipsis; }
.dicetalk-tl input, .dicetalk-tl select, .dicetalk-tl button { font: inherit; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #444); border-radius: 4px;
  height: 20px; padding: 0 4px; }
.dicetalk-tl button { cursor: pointer; }
.dicetalk-tl button:hover { border-color: var(--fg-color, #fff); }
.dicetalk-tl button:disabled { opacity: 0.4; cursor: default; }
.dicetalk-tl input[type=range] { padding: 0; border: none; background: transparent; flex: 1; min-width: 50px; }
.dicetalk-tl-strip { position: relative; height: 58px; margin: 0 7px; cursor: crosshair; touch-action: none; }
.dicetalk-tl-band { position: absolute; left: 0; right: 0; top: 10px; height: 30px; width: 100%;
  border-radius: 3px; border: 1px solid var(--border-color, #444); }
.dicetalk-tl-tick { position: absolute; top: 42px; transform: translateX(-50%); font-size: 9px;
  color: var(--descrip-text, #999); pointer-events: none; }
.dicetalk-tl-playhead { position: absolute; top: 4px; height: 40px; width: 0; border-left: 2px solid #fff;
  box-shadow: 0 0 2px #000; pointer-events: none; }
.dicetalk-tl-marker { position: absolute; top: 2px; width: 14px; height: 14px; margin-left: -7px;
  transform: rotate(45deg); border: 2px solid #111; border-radius: 2px; cursor: grab; }
.dicetalk-tl-marker.selected { border-color: #fff; box-shadow: 0 0 0 2px rgba(255,255,255,0.35); }
.dicetalk-tl-marker.auto { border-style: dashed; }
.dicetalk-tl-bars { display: grid; grid-template-columns: 1fr 1fr; gap: 2px 14px; }
.dicetalk-tl-bar { display: grid; grid-template-columns: 62px 1fr 34px; align-items: center; gap: 4px; height: 14px; }
.dicetalk-tl-bar-track { height: 8px; background: var(--comfy-input-bg, #222); border-radius: 4px; overflow: hidden; }
.dicetalk-tl-bar-fill { height: 100%; border-radius: 4px; }
.dicetalk-tl-bar span:last-child { text-align: right; font-variant-numeric: tabular-nums; }
.dicetalk-tl-panel { display: flex; flex-direction: column; gap: 6px; padding: 8px; border-radius: 4px;
  background: var(--comfy-input-bg, #222); flex: 1; overflow: hidden; }
.dicetalk-tl-panel.compact { flex: none; padding: 5px 8px; gap: 4px; }
.dicetalk-tl-quote { font-style: italic; white-space: pre-wrap; overflow: hidden; max-height: 2.6em; }
.dicetalk-tl-error { color: #f87171; white-space: normal; }
.dicetalk-tl-num { width: 52px; }
.dicetalk-tl-keyframe { display: flex; flex-direction: column; gap: 4px; }
.dicetalk-tl-mixrow { overflow-x: auto; overflow-y: hidden; scrollbar-width: thin; }
.dicetalk-tl-mixrow select { width: 92px; }
.dicetalk-tl-mixrow .dicetalk-tl-weight { width: 46px; }
.dicetalk-tl-time { width: 62px; }
</style>`;

/**
 * Gives `host` (an element the editor owns) a shadow root holding the style sheet and an empty
 * `.dicetalk-tl` element filling it; returns that element, where the editor draws.
 */
export function scopedBody(host) {
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = STYLE;
  const body = el("div", { class: "dicetalk-tl" });
  root.append(body);
  return body;
}

/** `document.createElement` with properties (`class`, `dataset`, `onevent` listeners, others) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

export function option(value, label = value, selected = false) {
  return el("option", { value, textContent: label, selected });
}

/** `value` rounded to `digits` decimals. */
export function round(value, digits = 2) {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
