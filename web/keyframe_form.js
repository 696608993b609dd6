/**
 * The form of the selected keyframe in the emotion timeline editor: its time, ease and transition
 * length; its emotion (one or a weighted mix of presets, saved emotions and connected `emotion_N`
 * inputs, or text); its intensity. Every change goes through `editor.write`, which rewrites the value.
 */

import { EASINGS, GENERATION_FPS, MAX_INTENSITY, PRESETS, formatSeconds, parseTime } from "./keyframes.js";
import { el, option, round } from "./ui.js";

const INTENSITY_TIP = "0 = neutral, 1 = as is, up to 1.5 exaggerated (2 at most)";

/** Names an emotion can be chosen from: the presets, the saved emotions, the connected inputs. */
function emotionChoices(editor) {
  const { node } = editor;
  const connected = (node.inputs ?? []).filter((i, slot) => /^emotion_\d$/.test(i.name) && node.isInputConnected(slot));
  const saved = editor.names().filter((n) => !PRESETS.includes(n));
  return [...PRESETS, ...saved, ...connected.map((i) => i.name)];
}

function setTime(editor, keyframe, key, text) {
  const value = text.trim();
  if (!value) delete keyframe[key];
  else {
    try {
      parseTime(value);
    } catch (err) {
      editor.message = err.message;
      editor.render();
      return;
    }
    keyframe[key] = value;
  }
  editor.write(editor.keyframes, keyframe);
}

function timeRow(editor, keyframe, times, commit) {
  return el(
    "div",
    { class: "dicetalk-tl-row" },
    el("b", { textContent: `Keyframe ${editor.selected + 1}/${editor.keyframes.length}` }),
    el("span", { textContent: "at" }),
    el("input", {
      class: "dicetalk-tl-time dicetalk-tl-at",
      value: keyframe.at == null ? "" : String(keyframe.at),
      placeholder: times ? formatSeconds(times[editor.selected]) : "auto",
      title: `When it is fully reached: 2s, 30f (${GENERATION_FPS} per second), 50%; empty = spaced evenly`,
      onchange: (event) => setTime(editor, keyframe, "at", event.target.value),
    }),
    el("span", { textContent: "ease" }),
    el(
      "select",
      {
        class: "dicetalk-tl-ease",
        title: "How the change into this keyframe goes: hold (a jump at its time), linear, smooth (3u²−2u³)",
        onchange: (event) => {
          keyframe.ease = event.target.value;
          commit();
        },
      },
      ...EASINGS.map((e) => option(e, e, (keyframe.ease ?? "smooth") === e)),
    ),
    el("span", { textContent: "over" }),
    el("input", {
      class: "dicetalk-tl-time dicetalk-tl-over",
      value: keyframe.over == null ? "" : String(keyframe.over),
      placeholder: "all",
      title: "Length of the change, ending at the keyframe; empty = from the previous keyframe",
      onchange: (event) => setTime(editor, keyframe, "over", event.target.value),
    }),
    el("span", { style: "flex: 1" }),
    el("button", {
      class: "dicetalk-tl-add",
      textContent: "+",
      title: "Add a keyframe at the playhead (double-clicking the strip adds one too)",
      onclick: () => editor.addKeyframe(editor.playhead),
    }),
    el("button", {
      class: "dicetalk-tl-delete",
      textContent: "✕",
      title: "Delete this keyframe",
      disabled: editor.keyframes.length < 2,
      onclick: () => {
        editor.keyframes.splice(editor.selected, 1);
        editor.selected = Math.max(0, editor.selected - 1);
        editor.write(editor.keyframes);
      },
    }),
  );
}

function textEmotion(keyframe, choices, commit) {
  return [
    el(
      "select",
      {
        class: "dicetalk-tl-emotion",
        title: "Replace the text by one emotion",
        onchange: (event) => {
          keyframe.emotion = { [event.target.value]: 1.0 };
          commit();
        },
      },
      option("", "text:", true),
      ...choices.map((name) => option(name)),
    ),
    el("input", {
      class: "dicetalk-tl-emotion-text",
      value: keyframe.emotion,
      style: "flex: 1; min-width: 120px",
      title: "Emotion text, e.g. very happy and a bit surprised",
      onchange: (event) => {
        keyframe.emotion = event.target.value;
        commit();
      },
    }),
  ];
}

function mixEmotion(keyframe, choices, commit) {
  const entries = Object.entries(keyframe.emotion);
  const parts = [];
  entries.forEach(([name, weight], index) => {
    parts.push(
      el(
        "select",
        {
          class: "dicetalk-tl-emotion",
          dataset: { index: String(index) },
          title: "Emotion (a preset, a saved emotion or a connected input)",
          onchange: (event) => {
            const mix = {};
            entries.forEach(([n, w], j) => {
              const key = j === index ? event.target.value : n;
              mix[key] = (mix[key] ?? 0) + w; // choosing a name already in the mix merges the two
            });
            keyframe.emotion = mix;
            commit();
          },
        },
        ...[...new Set([...choices, name])].map((n) => option(n, n, n === name)),
      ),
    );
    if (entries.length > 1) {
      parts.push(
        el("input", {
          class: "dicetalk-tl-num dicetalk-tl-weight",
          type: "number",
          min: 0,
          step: 0.05,
          value: weight,
          title: "Weight in the mix (weights are normalised)",
          onchange: (event) => {
            keyframe.emotion[name] = Math.max(0, round(Number(event.target.value) || 0, 3));
            commit();
          },
        }),
        el("button", {
          textContent: "✕",
          title: "Remove from the mix",
          onclick: () => {
            delete keyframe.emotion[name];
            commit();
          },
        }),
      );
    }
  });
  parts.push(
    el("button", {
      class: "dicetalk-tl-mix",
      textContent: "+ mix",
      title: "Mix in another emotion",
      onclick: () => {
        const name = choices.find((n) => !(n in keyframe.emotion) && n !== "neutral");
        if (name) keyframe.emotion[name] = 1.0;
        commit();
      },
    }),
  );
  return parts;
}

function intensityRow(editor, keyframe, commit) {
  const intensity = keyframe.intensity ?? 1.0;
  const set = (value) => {
    const number = Number(value);
    if (!(number >= 0 && number <= MAX_INTENSITY)) {
      editor.message = `Intensity must be between 0 and ${MAX_INTENSITY}.`;
      editor.render();
      return;
    }
    keyframe.intensity = round(number, 2);
    commit();
  };
  const input = (kind) =>
    el("input", {
      class: kind === "range" ? "dicetalk-tl-intensity-slider" : "dicetalk-tl-num dicetalk-tl-intensity",
      type: kind,
      min: 0,
      max: MAX_INTENSITY,
      step: 0.05,
      value: intensity,
      title: INTENSITY_TIP,
      onchange: (event) => set(event.target.value),
    });
  return el(
    "div",
    { class: "dicetalk-tl-row" },
    el("span", { textContent: "intensity" }),
    input("range"),
    input("number"),
  );
}

/**
 * The form of `editor.keyframes[editor.selected]`.
 * @param {import("./timeline_editor.js").TimelineEditor} editor
 * @param {number[]|null} times the keyframes' resolved times (null when they cannot be resolved)
 * @returns {HTMLElement}
 */
export function keyframeForm(editor, times) {
  const box = el("div", { class: "dicetalk-tl-keyframe" });
  const keyframe = editor.keyframes[editor.selected];
  if (!keyframe) return box;
  const commit = () => editor.write(editor.keyframes, keyframe);
  const choices = emotionChoices(editor);
  const emotion =
    typeof keyframe.emotion === "string"
      ? textEmotion(keyframe, choices, commit)
      : mixEmotion(keyframe, choices, commit);
  box.append(
    timeRow(editor, keyframe, times, commit),
    el("div", { class: "dicetalk-tl-row dicetalk-tl-mixrow" }, el("span", { textContent: "emotion" }), ...emotion),
    intensityRow(editor, keyframe, commit),
  );
  return box;
}
