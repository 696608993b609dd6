/**
 * The emotion timeline editor: a DOM widget under DICE-Talk Emotion Timeline's `keyframes` text box.
 *
 * It reads and writes that text box only (the value format is documented in `keyframes.js`) and keeps
 * nothing else in the workflow but two UI properties of the node (the server never sees them):
 * `dicetalk clip seconds`, the clip length to assume when no audio is connected, and `dicetalk replaced
 * value`, the value the last conversion replaced ("Back to text" / "Back to keyframes" swap them). It
 * writes only when the user edits something: loading a workflow never changes the value.
 *
 * - the strip: the clip (length from the connected audio, see `clip_length.js`, or an editable
 *   default), a band coloured by the mix over time, one marker per keyframe (drag to move, click to
 *   select), a playhead (click or drag the strip; double-click adds a keyframe there holding the mix
 *   found there). Moving or adding a keyframe writes every keyframe's time explicitly;
 * - the selected keyframe: time, emotion (a preset, a saved emotion, a connected `emotion_N`, a mix of
 *   them with weights, or text), intensity, ease and transition length;
 * - the mix at the playhead: one bar per preset (and per other name used), computed as Python does.
 * English text is shown with its timeline previewed read-only and a "Convert to keyframes" button
 * (same meaning, see `textToKeyframes`); invalid JSON is shown with its error and left alone.
 */

import { keyframeForm } from "./keyframe_form.js";
import {
  GENERATION_FPS,
  MAX_INTENSITY,
  PRESETS,
  SAMPLE_RATE,
  formatKeyframes,
  formatSeconds,
  framesFromSamples,
  markSeconds,
  mixAt,
  parseTime,
  readValue,
  resolveTimes,
  spanOfFrames,
  textToKeyframes,
} from "./keyframes.js";
import { EMOTION_COLORS, OTHER_COLORS, el, round, scopedBody } from "./ui.js";

/** Height of the editor in canvas pixels. */
export const EDITOR_HEIGHT = 290;
/** Node properties the editor keeps (UI only; the server never sees them). */
export const CLIP_PROPERTY = "dicetalk clip seconds";
export const REPLACED_PROPERTY = "dicetalk replaced value";
const DEFAULT_CLIP_SECONDS = 5;
/** A time mark in the unit of `previous` (seconds when it had none). */
function markLike(previous, seconds, span) {
  let unit = "s";
  try {
    unit = previous == null ? "s" : parseTime(previous).unit;
  } catch {
    unit = "s";
  }
  if (unit === "f") return `${Math.round(seconds * GENERATION_FPS)}f`;
  if (unit === "%" && span > 0) return `${round((seconds / span) * 100, 1)}%`;
  return formatSeconds(seconds);
}

export class TimelineEditor {
  /**
   * @param {object} node the LiteGraph node (DICEEmotionTimeline)
   * @param {object} textWidget its `keyframes` widget (the value is read from and written to it)
   * @param {{names: () => string[], clipSource: () => object|null, clipFrames: (s: object) => Promise<number|null>,
   *   changed: () => void}} host emotion names the server knows, the clip's source and length, and a
   *   callback after each write (redraw, undo history)
   */
  constructor(node, textWidget, host) {
    this.node = node;
    this.textWidget = textWidget;
    this.host = host;
    this.seen = null;
    this.state = { kind: "text" };
    this.keyframes = [];
    this.selected = 0;
    this.playhead = 0;
    this.clip = { frames: null, label: "" };
    this.clipKey = null;
    this.clipChecked = 0;
    this.message = "";
    /** The DOM widget's element; the editor draws in `body`, inside its shadow root. */
    this.element = el("div", { class: "dicetalk-tl-host", style: "display: block" });
    this.body = scopedBody(this.element);
    for (const type of ["pointerdown", "keydown", "contextmenu"]) {
      this.element.addEventListener(type, (event) => event.stopPropagation());
    }
  }

  /** Keeps the editor in step with the graph (a new link to the audio, an edit elsewhere) between redraws. */
  start() {
    this.timer ??= setInterval(() => {
      if (this.node.graph) {
        this.attached = true;
        this.sync();
      } else if (this.attached) this.stop();
    }, 1000);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  // ------------------------------------------------------------------ value and clip

  names() {
    return this.host.names();
  }

  get frames() {
    if (this.clip.frames) return this.clip.frames;
    const seconds = Number(this.node.properties?.[CLIP_PROPERTY]) || DEFAULT_CLIP_SECONDS;
    return Math.max(1, framesFromSamples(Math.round(seconds * SAMPLE_RATE)));
  }

  get span() {
    return spanOfFrames(this.frames);
  }

  /** Called on every canvas draw: re-reads the value when it changed, and the clip now and then. */
  sync() {
    const value = String(this.textWidget.value ?? "");
    let dirty = value !== this.seen;
    if (dirty) this.read(value);
    if (performance.now() - this.clipChecked > 750) {
      this.clipChecked = performance.now();
      dirty = this.checkClip() || dirty;
    }
    if (dirty) this.render();
  }

  read(value) {
    this.seen = value;
    this.state = readValue(value, this.names());
    this.keyframes = this.state.kind === "json" ? this.state.keyframes : [];
    this.preview = null;
    this.previewError = "";
    if (this.state.kind === "text" && value.trim()) {
      try {
        this.preview = textToKeyframes(value, this.names());
        this.keyframes = structuredClone(this.preview);
      } catch (err) {
        this.previewError = err.message;
      }
    }
    this.selected = Math.min(this.selected, Math.max(0, this.keyframes.length - 1));
    this.message = "";
  }

  checkClip() {
    const source = this.host.clipSource();
    const key = source ? `${source.url}|${source.seconds}` : null;
    if (key === this.clipKey) return false;
    this.clipKey = key;
    this.clip = { frames: null, label: "" };
    if (source) {
      this.host.clipFrames(source).then((frames) => {
        if (this.clipKey !== key || !frames) return;
        const from = source.seconds > 0 ? "the audio encoder's duration" : source.file;
        this.clip = { frames, label: `from ${from}` };
        this.render();
      });
    }
    return true;
  }

  /** Writes `keyframes` into the text box (the only way the editor changes the workflow). */
  write(keyframes, selectedObject = null) {
    // In the order of their own times (resolved times never go backwards, so they cannot sort).
    const resolved = resolveTimes(keyframes, this.span);
    const own = keyframes.map((k, i) => (k.at == null ? resolved[i] : markSeconds(parseTime(k.at), this.span)));
    const order = keyframes.map((k, i) => [k, own[i], i]).sort((a, b) => a[1] - b[1] || a[2] - b[2]);
    this.keyframes = order.map(([k]) => k);
    if (selectedObject) this.selected = Math.max(0, this.keyframes.indexOf(selectedObject));
    const text = formatKeyframes(this.keyframes);
    this.textWidget.value = text;
    this.read(text);
    this.render();
    this.host.changed();
  }

  /** Gives every keyframe an explicit time (before a drag or an insert changes the spacing). */
  pinTimes() {
    const times = resolveTimes(this.keyframes, this.span);
    this.keyframes.forEach((k, i) => {
      if (k.at == null) k.at = formatSeconds(times[i]);
    });
  }

  // ------------------------------------------------------------------ rendering

  /** Keyframes can be edited: the value is JSON and the input is not linked from another node. */
  get editable() {
    return this.state.kind === "json" && !this.linked;
  }

  get linked() {
    const name = this.textWidget.name;
    return this.node.inputs?.some((input, slot) => input.widget?.name === name && this.node.isInputConnected(slot)) ?? false;
  }

  render() {
    this.body.replaceChildren(this.header());
    if (this.linked) this.body.append(this.panel("The keyframes come from a linked input; edit them there."));
    else if (this.state.kind === "json") this.body.append(...this.editor());
    else if (this.state.kind === "invalid") {
      this.body.append(
        this.panel(
          "The JSON above has a problem, so the timeline is read-only until it is fixed in the text box:",
          el("div", { class: "dicetalk-tl-error", textContent: this.state.error }),
        ),
      );
    } else this.body.append(...this.textPanel());
  }

  header() {
    const frames = this.frames;
    const info = `${(frames / GENERATION_FPS).toFixed(2)} s · ${frames} frames`;
    const row = el("div", { class: "dicetalk-tl-row" }, el("b", { textContent: "Clip" }));
    if (this.clip.frames) {
      row.append(el("span", { class: "dicetalk-tl-clip", textContent: info }));
      row.append(el("span", { class: "dicetalk-tl-muted", textContent: this.clip.label, title: this.clip.label }));
    } else {
      const seconds = Number(this.node.properties?.[CLIP_PROPERTY]) || DEFAULT_CLIP_SECONDS;
      row.append(
        el("input", {
          class: "dicetalk-tl-num dicetalk-tl-clip-seconds",
          type: "number",
          min: 0.2,
          max: 400,
          step: 0.1,
          value: seconds,
          title:
            "Clip length to assume: connect Load Audio -> DICE-Talk Audio Encoder -> Emotion Bank to use the speech's",
          onchange: (event) => {
            const value = Number(event.target.value);
            if (value > 0) this.node.properties[CLIP_PROPERTY] = value;
            this.render();
          },
        }),
        el("span", { class: "dicetalk-tl-clip", textContent: `s · ${frames} frames` }),
        el("span", { class: "dicetalk-tl-muted", textContent: "(no audio connected)" }),
      );
    }
    const previous = this.node.properties?.[REPLACED_PROPERTY];
    if (typeof previous === "string" && previous !== this.seen && !this.linked) {
      const back = readValue(previous, this.names()).kind === "json" ? "Back to keyframes" : "Back to text";
      row.append(
        el("span", { style: "flex: 1" }),
        el("button", {
          class: "dicetalk-tl-restore",
          textContent: back,
          title: `Put back the value the last conversion replaced (the current one is kept in its place):\n${previous}`,
          onclick: () => this.restore(),
        }),
      );
    }
    return row;
  }

  panel(text, ...more) {
    return el("div", { class: "dicetalk-tl-panel" }, el("div", { textContent: text }), ...more);
  }

  /** Text: shown as it is, its timeline previewed read-only, and an offer to convert it (or start anew). */
  textPanel() {
    const text = (this.seen ?? "").trim();
    const panel = el(
      "div",
      { class: `dicetalk-tl-panel${this.preview ? " compact" : ""}` },
      el("div", { class: "dicetalk-tl-quote", textContent: text ? `Text: “${text}”` : "The emotion is empty." }),
    );
    const row = el("div", { class: "dicetalk-tl-row" });
    if (this.preview) {
      row.append(
        el("button", {
          class: "dicetalk-tl-convert",
          textContent: "Convert to keyframes",
          title: "Same emotions, times and transitions as JSON keyframes; the text is kept on the node (Back to text)",
          onclick: () => this.replaceText(this.preview),
        }),
        el("span", { class: "dicetalk-tl-muted", textContent: "to edit the timeline below (read-only now)" }),
      );
    } else {
      if (this.previewError) {
        panel.append(el("div", { class: "dicetalk-tl-error", textContent: `Cannot convert: ${this.previewError}` }));
      }
      row.append(
        el("button", {
          class: "dicetalk-tl-start",
          textContent: "Start new keyframes",
          title: "Replace the text with one neutral keyframe; the text is kept on the node (Back to text)",
          onclick: () => this.replaceText([{ at: "0.00s", emotion: { neutral: 1.0 }, intensity: 1.0, ease: "smooth" }]),
        }),
      );
    }
    panel.append(row);
    if (!this.preview) return [panel];
    const [strip, , bars, message] = this.editor();
    return [panel, strip, bars, message];
  }

  replaceText(keyframes) {
    const text = this.seen ?? "";
    keyframes = structuredClone(keyframes);
    if (text.trim()) this.node.properties[REPLACED_PROPERTY] = text;
    this.selected = 0;
    this.write(keyframes);
  }

  /** Swaps the value with the one the last conversion replaced. */
  restore() {
    const previous = this.node.properties[REPLACED_PROPERTY];
    this.node.properties[REPLACED_PROPERTY] = this.seen;
    this.textWidget.value = previous;
    this.read(previous);
    this.render();
    this.host.changed();
  }

  editor() {
    let mix = null;
    let times = null;
    try {
      times = resolveTimes(this.keyframes, this.span);
      mix = mixAt(this.keyframes, this.playhead, this.span, this.names());
    } catch (err) {
      this.message = err.message;
    }
    return [
      this.strip(times),
      keyframeForm(this, times),
      this.bars(mix),
      el("div", { class: "dicetalk-tl-error dicetalk-tl-message", textContent: this.message }),
    ];
  }

  // ------------------------------------------------------------------ strip

  secondsAt(event, strip) {
    const box = strip.getBoundingClientRect();
    const u = box.width > 0 ? (event.clientX - box.left) / box.width : 0;
    return round(Math.min(Math.max(u, 0), 1) * this.span, 2);
  }

  strip(times) {
    const strip = el("div", { class: "dicetalk-tl-strip" });
    const band = el("canvas", { class: "dicetalk-tl-band" });
    strip.append(band);
    const ticks = Math.max(1, Math.min(8, Math.floor(this.span)));
    for (let i = 0; i <= ticks; i++) {
      const t = (this.span * i) / ticks;
      strip.append(
        el("div", { class: "dicetalk-tl-tick", style: `left: ${(i / ticks) * 100}%`, textContent: `${round(t, 1)}s` }),
      );
    }
    const playhead = el("div", { class: "dicetalk-tl-playhead" });
    playhead.style.left = `${this.span > 0 ? (this.playhead / this.span) * 100 : 0}%`;
    strip.append(playhead);
    this.keyframes.forEach((keyframe, i) => {
      const seconds = times ? times[i] : 0;
      const state = `${this.editable && i === this.selected ? " selected" : ""}${keyframe.at == null ? " auto" : ""}`;
      const marker = el("div", {
        class: `dicetalk-tl-marker${state}`,
        dataset: { index: String(i) },
        title: `Keyframe ${i + 1} at ${formatSeconds(seconds)}: drag to move`,
      });
      marker.style.left = `${this.span > 0 ? Math.min(seconds / this.span, 1) * 100 : 0}%`;
      marker.style.background = this.colorOf(keyframe);
      if (this.editable) marker.addEventListener("pointerdown", (event) => this.dragKeyframe(event, strip, keyframe));
      strip.append(marker);
    });
    strip.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || (this.editable && event.target.classList.contains("dicetalk-tl-marker"))) return;
      this.movePlayhead(event, strip);
    });
    strip.addEventListener("dblclick", (event) => {
      if (!this.editable || event.target.classList.contains("dicetalk-tl-marker")) return;
      this.addKeyframe(this.secondsAt(event, strip));
    });
    requestAnimationFrame(() => this.paintBand(band));
    return strip;
  }

  colorOf(keyframe) {
    try {
      const mix = mixAt([keyframe], 0, this.span, this.names());
      const [name] = Object.entries(mix).sort((a, b) => b[1] - a[1])[0];
      return this.nameColor(name);
    } catch {
      return "#666";
    }
  }

  nameColor(name) {
    if (EMOTION_COLORS[name]) return EMOTION_COLORS[name];
    const others = this.barNames().filter((n) => !PRESETS.includes(n));
    return OTHER_COLORS[Math.max(0, others.indexOf(name)) % OTHER_COLORS.length];
  }

  /** The band: at every x, the mix there as stacked colours (neutral's share in grey). */
  paintBand(canvas) {
    const width = Math.max(1, Math.round(canvas.clientWidth));
    const height = Math.max(1, Math.round(canvas.clientHeight));
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const names = this.barNames();
    for (let x = 0; x < width; x++) {
      let mix;
      try {
        mix = mixAt(this.keyframes, ((x + 0.5) / width) * this.span, this.span, this.names());
      } catch {
        return;
      }
      const total = names.reduce((sum, n) => sum + Math.max(0, mix[n] ?? 0), 0) || 1;
      let y = height;
      for (const name of names) {
        const h = (Math.max(0, mix[name] ?? 0) / total) * height;
        ctx.fillStyle = this.nameColor(name);
        ctx.fillRect(x, y - h, 1, h);
        y -= h;
      }
    }
  }

  dragKeyframe(event, strip, keyframe) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.pinTimes();
    this.selected = this.keyframes.indexOf(keyframe);
    const marker = event.target;
    marker.setPointerCapture(event.pointerId);
    const start = event.clientX;
    let moved = false;
    const move = (e) => {
      if (!moved && Math.abs(e.clientX - start) < 3) return;
      moved = true;
      const seconds = this.secondsAt(e, strip);
      keyframe.at = markLike(keyframe.at, seconds, this.span);
      marker.style.left = `${this.span > 0 ? (seconds / this.span) * 100 : 0}%`;
      marker.title = `Keyframe at ${formatSeconds(seconds)}`;
    };
    const up = () => {
      marker.removeEventListener("pointermove", move);
      marker.removeEventListener("pointerup", up);
      marker.removeEventListener("pointercancel", up);
      if (moved) this.write(this.keyframes, keyframe);
      else {
        this.playhead = resolveTimes(this.keyframes, this.span)[this.selected];
        this.render();
      }
    };
    marker.addEventListener("pointermove", move);
    marker.addEventListener("pointerup", up);
    marker.addEventListener("pointercancel", up);
  }

  movePlayhead(event, strip) {
    strip.setPointerCapture(event.pointerId);
    const move = (e) => {
      this.playhead = this.secondsAt(e, strip);
      this.updatePlayhead();
    };
    const up = () => {
      strip.removeEventListener("pointermove", move);
      strip.removeEventListener("pointerup", up);
      strip.removeEventListener("pointercancel", up);
    };
    strip.addEventListener("pointermove", move);
    strip.addEventListener("pointerup", up);
    strip.addEventListener("pointercancel", up);
    move(event);
  }

  /** Moves only the playhead line and the bars (no rebuild while dragging). */
  updatePlayhead() {
    const line = this.body.querySelector(".dicetalk-tl-playhead");
    if (line) line.style.left = `${this.span > 0 ? (this.playhead / this.span) * 100 : 0}%`;
    const bars = this.body.querySelector(".dicetalk-tl-bars-box");
    if (bars) {
      let mix = null;
      try {
        mix = mixAt(this.keyframes, this.playhead, this.span, this.names());
      } catch {
        mix = null;
      }
      bars.replaceWith(this.bars(mix));
    }
  }

  /** A new keyframe at `seconds` holding the mix found there, so the curve barely changes. */
  addKeyframe(seconds) {
    this.pinTimes();
    let emotion = { neutral: 1.0 };
    let intensity = 1.0;
    try {
      const mix = mixAt(this.keyframes, seconds, this.span, this.names());
      const parts = Object.entries(mix).filter(([name, c]) => name !== "neutral" && c > 0.005);
      const total = parts.reduce((sum, [, c]) => sum + c, 0);
      if (parts.length && total > 0) {
        emotion = Object.fromEntries(parts.map(([name, c]) => [name, round(c / total, 2)]));
        intensity = round(Math.min(total, MAX_INTENSITY), 2);
      }
    } catch {
      // an unreadable mix: start neutral
    }
    const keyframe = { at: formatSeconds(seconds), emotion, intensity, ease: "smooth" };
    this.playhead = seconds;
    this.write([...this.keyframes, keyframe], keyframe);
  }

  // ------------------------------------------------------------------ bars

  barNames() {
    const used = new Set();
    for (const keyframe of this.keyframes) {
      if (typeof keyframe.emotion === "object") Object.keys(keyframe.emotion).forEach((n) => used.add(n));
    }
    try {
      for (const name of Object.keys(mixAt(this.keyframes, 0, this.span, this.names()))) used.add(name);
    } catch {
      // names of unreadable keyframes are not shown
    }
    return [...PRESETS, ...[...used].filter((n) => !PRESETS.includes(n))];
  }

  bars(mix) {
    const box = el("div", { class: "dicetalk-tl-bars-box" });
    box.append(
      el("div", {
        class: "dicetalk-tl-row dicetalk-tl-muted",
        textContent: `Mix at ${formatSeconds(this.playhead)} (click the strip to move)`,
      }),
    );
    const grid = el("div", { class: "dicetalk-tl-bars" });
    for (const name of this.barNames()) {
      const value = mix ? Math.max(0, mix[name] ?? 0) : 0;
      const fill = el("div", { class: "dicetalk-tl-bar-fill" });
      fill.style.width = `${Math.min(value / 1.5, 1) * 100}%`;
      fill.style.background = this.nameColor(name);
      grid.append(
        el(
          "div",
          { class: "dicetalk-tl-bar", dataset: { name, value: value.toFixed(3) } },
          el("span", { textContent: name }),
          el("div", { class: "dicetalk-tl-bar-track" }, fill),
          el("span", { textContent: mix ? value.toFixed(2) : "–" }),
        ),
      );
    }
    box.append(grid);
    return box;
  }
}
