/**
 * DICE-Talk emotion keyframes in the browser: the value of DICE-Talk Emotion Timeline's `keyframes`
 * input, read, checked, evaluated and written exactly as the Python side does. No DOM, no ComfyUI
 * imports: `tests/comfy/test_web_extension.py` runs this module under node against Python.
 *
 * ## The value (a plain string: all the server sees of the editor)
 *
 * Either the English text of `dicetalk_core/emotion/text.py` (`"slightly sad, then very happy at 2s"`),
 * shown read-only by the editor with an offer to convert it, or the JSON keyframe list of
 * `dicetalk_core/emotion/keyframes_json.py`. After an edit the editor writes one keyframe per line,
 * keys in the order at, emotion, intensity, ease, over (absent ones left out), sorted by time:
 *
 * ```json
 * [
 *   {"at": "0.00s", "emotion": {"neutral": 1.0}, "intensity": 1.0, "ease": "smooth"},
 *   {"at": "1.20s", "emotion": {"happy": 0.7, "surprised": 0.3}, "intensity": 1.2, "ease": "smooth", "over": "0.5s"}
 * ]
 * ```
 *
 * @typedef {object} Keyframe One JSON keyframe (unknown keys are refused, as in Python).
 * @property {string|Object<string, number>} emotion Text such as `"very happy"` (adverbs, synonyms,
 *   `and` mixes), or a mix `{name: weight}`; weights are normalised. Names: the eight presets, saved
 *   emotions, `emotion_1`..`emotion_3` (the node's inputs).
 * @property {string|number} [at] When the emotion is fully reached: `"2s"`, `"30f"` (generated frames,
 *   12.5 per second), `"50%"` of the clip, or a number of seconds. Absent: spaced evenly.
 * @property {number} [intensity=1] Scales the whole keyframe: 0 neutral, 1 as is, up to 2.
 * @property {"hold"|"linear"|"smooth"} [ease="smooth"] The change from the previous keyframe: a jump
 *   at `at`, linear, or 3u²−2u³.
 * @property {string|number} [over] Length of that change, ending at `at`; absent: from the previous
 *   keyframe (text keyframes default to 0.5 s, so a converted text carries `"over": "0.5s"`).
 *
 * Times it writes are seconds with two decimals (`"1.20s"`); a dragged keyframe keeps its unit (`"30f"`
 * stays in frames, `"50%"` in percent); moving or adding a keyframe gives every keyframe an explicit
 * time. Also accepted (kept as typed until the first edit, which writes the list form):
 * `{"keyframes": [...]}`, one keyframe object, or a fixed mix `{"happy": 0.7, "sad": 0.3}`.
 *
 * The mix at a time `t` is what `Timeline.priors` computes: with neutral `n`, keyframe `k` is
 * `n + Σ_i c_i (p_i − n)` with `c_i = v_i · a_i · intensity_k` (`v_i` normalised weights, `a_i` term
 * intensities), and between keyframes the coefficients are eased like the priors. {@link mixAt} returns
 * those coefficients per name, plus `neutral = 1 − Σ c_i` (the share of the neutral prior).
 */

/**
 * The grammar's word tables and the numbers of the engine, as the pack's `GET /dicetalk/vocabulary`
 * route (`nodes/routes.py`) serves them from `dicetalk_core`: nothing here keeps a copy of them. The
 * extension loads them once (`setVocabulary`) before any node is created; the constants below are set then.
 */
let vocabulary = null;
/** Generated frames per second of speech. */
export let GENERATION_FPS = Number.NaN;
/** The audio front end's sample rate (Hz). */
export let SAMPLE_RATE = Number.NaN;
/** The official emotion presets. */
export let PRESETS = [];
/** How a keyframe's change eases in (`timeline.EASINGS`). */
export let EASINGS = [];
/** The largest intensity a term may reach. */
export let MAX_INTENSITY = Number.NaN;
let FILLERS = new Set();
let SLOT_PATTERN = null;
let MAX_PHRASE = 0;

/**
 * Takes the vocabulary (the JSON of `GET /dicetalk/vocabulary`); every function below needs it.
 * @param {object} served `emotion_words` (word -> [preset, implied intensity]), `adverbs` (phrase ->
 *   factor), `transitions` (word -> [ease, over or null]), `default_transition`, the keyword lists
 *   (`then_words`, `and_words`, `time_words`, `over_words`, `fillers`, `ignored_punctuation`),
 *   `slot_pattern`, `presets`, `easings`, `keyframe_keys`, `max_intensity`, `generation_fps`,
 *   `sample_rate`, `samples_per_audio_frame`, `audio_frames_per_generated_frame`, `max_audio_frames`
 */
export function setVocabulary(served) {
  vocabulary = served;
  GENERATION_FPS = served.generation_fps;
  SAMPLE_RATE = served.sample_rate;
  PRESETS = [...served.presets];
  EASINGS = [...served.easings];
  MAX_INTENSITY = served.max_intensity;
  FILLERS = new Set(served.fillers);
  SLOT_PATTERN = new RegExp(served.slot_pattern);
  MAX_PHRASE = Math.max(...Object.keys(served.adverbs).map((p) => p.split(" ").length));
}

/** The vocabulary, or an error saying it never arrived. */
function tables() {
  if (vocabulary === null) {
    throw new EmotionError(
      "The DICE-Talk vocabulary did not load from the server (GET /dicetalk/vocabulary); reload the page, " +
        "and check ComfyUI's log for an import error of the pack.",
    );
  }
  return vocabulary;
}

/** An error in an emotion value; `message` is written for the artist (as Python's InputError). */
export class EmotionError extends Error {}

// ------------------------------------------------------------------------------------------ times

const SECONDS = "s|sec|secs|second|seconds";
const TIME_PATTERNS = [
  [new RegExp(`^(\\d+(?:\\.\\d+)?|\\.\\d+)\\s*(?:${SECONDS})?$`), "s", 1.0],
  [/^(\d+(?:\.\d+)?|\.\d+)\s*ms$/, "s", 0.001],
  [/^(\d+(?:\.\d+)?|\.\d+)\s*%$/, "%", 1.0],
  [/^(\d+)\s*(?:f|frames?)$/, "f", 1.0],
  [/^(?:f|frame)\s*(\d+)$/, "f", 1.0],
];

/**
 * `TimeMark.parse`: `2`, `"2.5s"`, `"500ms"`, `"30f"`, `"frame 30"`, `"50%"` -> `{value, unit}`.
 * @param {string|number} text
 * @returns {{value: number, unit: "s"|"f"|"%"}}
 */
export function parseTime(text) {
  let mark = null;
  if (typeof text === "number") mark = { value: text, unit: "s" };
  else if (typeof text === "string") {
    const cleaned = text.trim().toLowerCase();
    for (const [pattern, unit, scale] of TIME_PATTERNS) {
      const match = pattern.exec(cleaned);
      if (match) {
        mark = { value: Number(match[1]) * scale, unit };
        break;
      }
    }
  }
  if (mark === null) {
    throw new EmotionError(
      `${JSON.stringify(text)} is not a time. Write seconds ('2s', '2.5 sec', '500ms'), generated frames ` +
        `('30f' or 'frame 30'; ${GENERATION_FPS} frames per second) or percent of the clip ('50%').`,
    );
  }
  if (!Number.isFinite(mark.value) || mark.value < 0) throw new EmotionError(`A time must be a finite number >= 0.`);
  if (mark.unit === "%" && mark.value > 100) throw new EmotionError(`A time in percent must be at most 100%.`);
  return mark;
}

/** A mark in seconds for a clip whose last generated frame is at `span` seconds. */
export function markSeconds(mark, span) {
  if (mark.unit === "s") return mark.value;
  if (mark.unit === "f") return mark.value / GENERATION_FPS;
  return (mark.value / 100) * span;
}

/** Python's `f"{value:g}"` for the numbers met here. */
function formatG(value) {
  return String(Number(value.toPrecision(6)));
}

/** `str(TimeMark)`: `"2s"`, `"30f"`, `"50%"`. */
export function formatMark(mark) {
  return `${formatG(mark.value)}${mark.unit}`;
}

/** A time in seconds as the widget writes it: `"1.20s"`. */
export function formatSeconds(seconds) {
  return `${Math.max(0, seconds).toFixed(2)}s`;
}

/**
 * Generated frames for a clip, as the audio front end counts them: audio frames of
 * `samples_per_audio_frame` samples (at most `max_audio_frames`), `audio_frames_per_generated_frame` per frame.
 * @param {number} samples length of the speech resampled to `SAMPLE_RATE`
 */
export function framesFromSamples(samples) {
  const v = tables();
  const audioFrames = Math.min(Math.floor(samples / v.samples_per_audio_frame), v.max_audio_frames);
  return Math.floor(audioFrames / v.audio_frames_per_generated_frame);
}

/** Time of the last generated frame: what `50%` and `100%` refer to. */
export function spanOfFrames(frames) {
  return Math.max(0, frames - 1) / GENERATION_FPS;
}

// ------------------------------------------------------------------------------------------ text

// text._TOKEN: a number with an optional unit, a word (with an optional ":1.2"), or punctuation.
const NUMBER = String.raw`(?:\d+(?:\.\d+)?|\.\d+)`;
const TOKEN = new RegExp(
  String.raw`\s*(?:(${NUMBER}\s*(?:%|ms\b|s\b|secs?\b|seconds?\b|f\b|frames?\b)?)` +
    String.raw`|([a-z_][a-z0-9_-]*(?::${NUMBER})?)|([,+&;.!]))`,
  "y",
);

function tokenize(text) {
  const cleaned = text.toLowerCase().replaceAll("→", " then ").replaceAll("->", " then ").replaceAll("=>", " then ");
  const source = cleaned.replaceAll(";", " then ");
  const tokens = [];
  let pos = 0;
  while (pos < source.length) {
    if (source.slice(pos).trim() === "") break;
    TOKEN.lastIndex = pos;
    const match = TOKEN.exec(source);
    if (match === null || TOKEN.lastIndex === pos) {
      throw new EmotionError(`Unexpected character '${source.slice(pos).trim()[0]}' in emotion text '${text}'.`);
    }
    const token = (match[1] ?? match[2] ?? match[3]).trim().replace(/\s+/g, " ");
    if (!tables().ignored_punctuation.includes(token)) tokens.push(token);
    pos = TOKEN.lastIndex;
  }
  return tokens;
}

function splitSegments(tokens) {
  const segments = [[]];
  for (const tok of tokens) {
    if (tables().then_words.includes(tok)) {
      const last = segments[segments.length - 1];
      while (last.length && (last[last.length - 1] === "," || last[last.length - 1] === "and")) last.pop();
      if (segments.length > 1 && !last.length) continue;
      segments.push([]);
    } else segments[segments.length - 1].push(tok);
  }
  return segments;
}

const isNumber = (tok) => /^(\d+(?:\.\d+)?|\.\d+)$/.test(tok);

function timeFrom(tokens, i, text) {
  if (i >= tokens.length) throw new EmotionError(`A time is missing at the end of '${text}'.`);
  const tok = tokens[i];
  if ((tok === "frame" || tok === "f") && i + 1 < tokens.length && isNumber(tokens[i + 1])) {
    return [parseTime(`frame ${tokens[i + 1]}`), i + 2];
  }
  if (isNumber(tok) && i + 1 < tokens.length && /^(s|secs?|seconds?|ms|f|frames?|%)$/.test(tokens[i + 1])) {
    return [parseTime(tok + tokens[i + 1]), i + 2];
  }
  if (/^[\d.]/.test(tok)) return [parseTime(tok), i + 1];
  throw new EmotionError(`'${tok}' in '${text}' is not a time; write e.g. 'at 2s', 'at 30f' or 'at 50%'.`);
}

function phraseAt(tokens, i) {
  for (let size = MAX_PHRASE; size > 0; size--) {
    const words = tokens.slice(i, i + size);
    if (words.length === size && Object.hasOwn(tables().adverbs, words.join(" "))) return [words.join(" "), i + size];
  }
  return null;
}

function emotionWord(word, names) {
  if (Object.hasOwn(tables().emotion_words, word)) return tables().emotion_words[word];
  const slot = SLOT_PATTERN.exec(word);
  if (slot) return [`emotion_${slot[1]}`, 1.0];
  const found = names.find((n) => n.toLowerCase() === word);
  return found === undefined ? null : [found, 1.0];
}

/** `text._parse_segment`: the terms of one segment, its time, ease and over, and the mix's own tokens. */
function parseSegment(tokens, text, names) {
  const terms = [];
  const mixTokens = [];
  let at = null;
  const v = tables();
  let [ease, over] = v.default_transition;
  let weight = null;
  let factor = 1.0;
  let pending = [];
  let i = 0;
  while (i < tokens.length) {
    const tok = tokens[i];
    if (v.time_words.includes(tok)) {
      [at, i] = timeFrom(tokens, i + 1, text);
      continue;
    }
    if (v.over_words.includes(tok)) {
      [over, i] = timeFrom(tokens, i + 1, text);
      continue;
    }
    if (Object.hasOwn(v.transitions, tok)) {
      [ease, over] = v.transitions[tok];
      i += 1;
      continue;
    }
    mixTokens.push(tok);
    const phrase = phraseAt(tokens, i);
    if (phrase !== null) {
      factor *= v.adverbs[phrase[0]];
      pending.push(phrase[0]);
      mixTokens.push(...tokens.slice(i + 1, phrase[1]));
      i = phrase[1];
      continue;
    }
    if (v.and_words.includes(tok)) {
      if (pending.length || weight !== null) {
        throw new EmotionError(`'${pending.join(" ") || weight}' in '${text}' is not followed by an emotion.`);
      }
      i += 1;
      continue;
    }
    if (FILLERS.has(tok)) {
      i += 1;
      continue;
    }
    if (tok.endsWith("%") || isNumber(tok)) {
      if (weight !== null || pending.length) throw new EmotionError(`Could not understand '${tok}' in '${text}'.`);
      const value = Number(tok.replace(/%$/, "").trim());
      weight = tok.endsWith("%") ? value / 100 : value;
      i += 1;
      continue;
    }
    const [word, number] = tok.split(":");
    const found = emotionWord(word, names);
    if (found === null) throw new EmotionError(`Could not understand '${word}' in the emotion text '${text}'.`);
    const intensity = found[1] * factor * (number ? Number(number) : 1.0);
    terms.push({ name: found[0], weight: weight ?? 1.0, intensity });
    weight = null;
    factor = 1.0;
    pending = [];
    i += 1;
  }
  if (pending.length || weight !== null) {
    throw new EmotionError(`'${pending.join(" ") || weight}' in '${text}' is not followed by an emotion.`);
  }
  if (!terms.length) throw new EmotionError(`A part of the emotion text '${text}' names no emotion.`);
  return { terms, at, ease, over, mixText: mixTokens.join(" ") };
}

function parseText(text, names) {
  if (!text.trim()) throw new EmotionError("The emotion text is empty.");
  const segments = splitSegments(tokenize(text));
  if (segments.some((s) => !s.length)) throw new EmotionError(`'then' needs an emotion on both sides in '${text}'.`);
  return segments.map((s) => parseSegment(s, text, names));
}

/** `parse_mix_text`: terms `{name, weight, intensity}` of one emotion text such as `"very happy and a bit sad"`. */
export function parseMixText(text, names = []) {
  const segments = parseText(text, names);
  if (segments.length !== 1) throw new EmotionError(`'${text}' describes a sequence ('then'); use one emotion here.`);
  return segments[0].terms;
}

/**
 * The English text as JSON keyframes with the same meaning (each segment's emotion kept as text, its
 * transition written out: text keyframes change over 0.5 s unless told otherwise).
 * @param {string} text
 * @param {string[]} names saved emotions and other accepted names
 * @returns {Keyframe[]}
 * @throws {EmotionError} when the text is not understood (the message names the word)
 */
export function textToKeyframes(text, names = []) {
  return parseText(text, names).map((segment) => {
    const keyframe = {};
    if (segment.at !== null) keyframe.at = formatMark(segment.at);
    keyframe.emotion = segment.mixText;
    keyframe.ease = segment.ease;
    if (segment.over !== null) keyframe.over = formatMark(segment.over);
    return keyframe;
  });
}

// ------------------------------------------------------------------------------------------ JSON

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function checkNumber(value, where) {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new EmotionError(`${where} must be a number, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** The terms of a keyframe's `emotion` (text or `{name: weight}`), as `keyframes_json._mix`. */
export function emotionTerms(emotion, names = [], where = "emotion") {
  if (typeof emotion === "string") {
    try {
      return parseMixText(emotion, names);
    } catch (err) {
      throw new EmotionError(`${where}: ${err.message}`);
    }
  }
  if (isPlainObject(emotion) && Object.keys(emotion).length) {
    return Object.entries(emotion).map(([name, weight]) => {
      const terms = parseMixText(name, names);
      if (terms.length !== 1) throw new EmotionError(`${where}: '${name}' must name one emotion.`);
      return { name: terms[0].name, weight: checkNumber(weight, `${where}['${name}']`), intensity: terms[0].intensity };
    });
  }
  throw new EmotionError(`${where} must be an emotion text such as "very happy" or a mix such as {"happy": 0.7}.`);
}

function checkKeyframe(value, where, names) {
  if (!isPlainObject(value))
    throw new EmotionError(`${where} must be an object like {"at": "2s", "emotion": "happy"}.`);
  const unknown = Object.keys(value).filter((k) => !tables().keyframe_keys.includes(k));
  if (unknown.length) throw new EmotionError(`${where} has unknown keys ${unknown.join(", ")}.`);
  if (!("emotion" in value)) throw new EmotionError(`${where} has no "emotion".`);
  const ease = "ease" in value ? value.ease : "smooth";
  if (!EASINGS.includes(ease)) throw new EmotionError(`${where}.ease is '${ease}'; use one of ${EASINGS.join(", ")}.`);
  const terms = emotionTerms(value.emotion, names, `${where}.emotion`);
  const at = value.at == null ? null : parseTime(value.at);
  const over = value.over == null ? null : parseTime(value.over);
  const intensity = checkNumber("intensity" in value ? value.intensity : 1.0, `${where}.intensity`);
  return { terms, at, ease, over, intensity };
}

/**
 * What a `keyframes` value is.
 * @param {string} text the input's value
 * @param {string[]} names saved emotions and other accepted names
 * @returns {{kind: "json", keyframes: Keyframe[], listForm: boolean} | {kind: "text"} |
 *   {kind: "invalid", error: string}}  `keyframes` are copies of the JSON objects (a fixed mix
 *   becomes one keyframe); `listForm` is false when the JSON was not a plain list.
 */
export function readValue(text, names = []) {
  if (typeof text !== "string" || !/^\s*[[{]/.test(text)) return { kind: "text" };
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { kind: "invalid", error: `Not valid JSON: ${err.message}` };
  }
  const listForm = Array.isArray(data);
  if (isPlainObject(data) && "keyframes" in data) {
    if (Object.keys(data).length !== 1)
      return { kind: "invalid", error: 'Besides "keyframes" the JSON has other keys.' };
    data = data.keyframes;
  }
  let keyframes;
  if (Array.isArray(data)) keyframes = data;
  else if (isPlainObject(data)) keyframes = "emotion" in data ? [data] : [{ emotion: data }];
  else return { kind: "invalid", error: "The JSON must be a list of keyframes or a mix object." };
  if (!keyframes.length) return { kind: "invalid", error: "The keyframe list is empty." };
  try {
    const specs = keyframes.map((k, i) => checkKeyframe(k, `keyframes[${i}]`, names));
    checkOrder(specs);
  } catch (err) {
    if (err instanceof EmotionError) return { kind: "invalid", error: err.message };
    throw err;
  }
  return { kind: "json", keyframes: structuredClone(keyframes), listForm };
}

function checkOrder(specs) {
  const last = {};
  specs.forEach((spec, i) => {
    if (spec.at === null) return;
    const previous = last[spec.at.unit];
    if (previous !== undefined && spec.at.value < previous[0]) {
      throw new EmotionError(
        `Keyframe times must not go backwards: keyframe ${i + 1} at ${formatMark(spec.at)} comes after keyframe ` +
          `${previous[1] + 1}. Reorder the keyframes or fix their times.`,
      );
    }
    last[spec.at.unit] = [spec.at.value, i];
  });
}

function formatNumber(value) {
  const rounded = Math.round(value * 10000) / 10000;
  return Number.isInteger(rounded) ? rounded.toFixed(1) : String(rounded);
}

function formatEmotion(emotion) {
  if (typeof emotion === "string") return JSON.stringify(emotion);
  const parts = Object.entries(emotion).map(([name, weight]) => `${JSON.stringify(name)}: ${formatNumber(weight)}`);
  return `{${parts.join(", ")}}`;
}

/**
 * The value the widget writes: a JSON list, one keyframe per line, keys in the order at, emotion,
 * intensity, ease, over (absent ones left out), numbers with at least one decimal.
 * @param {Keyframe[]} keyframes
 * @returns {string}
 */
export function formatKeyframes(keyframes) {
  const lines = keyframes.map((k) => {
    const parts = [];
    if (k.at != null) parts.push(`"at": ${typeof k.at === "number" ? formatNumber(k.at) : JSON.stringify(k.at)}`);
    parts.push(`"emotion": ${formatEmotion(k.emotion)}`);
    if (k.intensity != null) parts.push(`"intensity": ${formatNumber(k.intensity)}`);
    if (k.ease != null) parts.push(`"ease": ${JSON.stringify(k.ease)}`);
    if (k.over != null)
      parts.push(`"over": ${typeof k.over === "number" ? formatNumber(k.over) : JSON.stringify(k.over)}`);
    return `  {${parts.join(", ")}}`;
  });
  return `[\n${lines.join(",\n")}\n]`;
}

// ------------------------------------------------------------------------------------------ evaluation

function ease(kind, u) {
  if (kind === "linear") return u;
  if (kind === "smooth") return u * u * (3 - 2 * u);
  return 0;
}

/** A keyframe's coefficients `{name: v_i · a_i · intensity}` (neutral's offset is zero, so it is left out). */
export function coefficients(keyframe, names = []) {
  const terms = emotionTerms(keyframe.emotion, names);
  const total = terms.reduce((sum, t) => sum + t.weight, 0);
  if (!(total > 0) || terms.some((t) => t.weight < 0)) {
    throw new EmotionError("Weights must not be negative and at least one must be positive.");
  }
  const scale = keyframe.intensity ?? 1.0;
  const out = {};
  for (const t of terms) {
    if (t.weight === 0) continue;
    const intensity = t.intensity * scale;
    if (!(intensity >= 0 && intensity <= MAX_INTENSITY)) {
      throw new EmotionError(`The intensity of ${t.name} is ${formatG(intensity)}; use 0 to ${MAX_INTENSITY}.`);
    }
    if (t.name === "neutral") continue;
    out[t.name] = (out[t.name] ?? 0) + (t.weight / total) * intensity;
  }
  return out;
}

/**
 * `Timeline.times`: every keyframe's time in seconds (absent times spaced evenly; a later keyframe
 * in another unit that would fall before its predecessor is moved up to it).
 * @param {Keyframe[]} keyframes
 * @param {number} span time of the clip's last generated frame
 */
export function resolveTimes(keyframes, span) {
  const known = keyframes.map((k) => (k.at == null ? null : markSeconds(parseTime(k.at), span)));
  if (known[0] === null) known[0] = 0;
  const count = known.length;
  let i = 1;
  while (i < count) {
    if (known[i] !== null) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < count && known[j] === null) j += 1;
    const left = known[i - 1];
    const [right, steps] = j < count ? [known[j], j - i + 1] : [Math.max(span, left), count - i + 1];
    for (let m = i; m < j; m++) known[m] = left + ((m - i + 1) / steps) * (right - left);
    i = j;
  }
  for (let k = 1; k < count; k++) if (known[k] < known[k - 1]) known[k] = known[k - 1];
  return known;
}

/**
 * The mix at `t` seconds, as `Timeline.priors` makes it: `{name: coefficient}` for every name met,
 * plus `neutral`: `1 − Σ` of the others (the prior is `Σ c_i p_i + neutral · n`).
 * @param {Keyframe[]} keyframes
 * @param {number} t seconds
 * @param {number} span time of the clip's last generated frame
 * @param {string[]} names saved emotions and other accepted names
 * @returns {Object<string, number>}
 */
export function mixAt(keyframes, t, span, names = []) {
  const coeffs = keyframes.map((k) => coefficients(k, names));
  const times = resolveTimes(keyframes, span);
  let mix;
  if (keyframes.length === 1) mix = { ...coeffs[0] };
  else {
    const after = times.filter((time) => time <= t).length;
    const k = Math.min(Math.max(after, 1), keyframes.length - 1);
    const before = coeffs[Math.max(after - 1, 0)];
    mix = { ...before };
    if (after > 0 && after < keyframes.length) {
      const key = keyframes[k];
      let start = times[k - 1];
      if (key.over != null) start = Math.max(start, times[k] - markSeconds(parseTime(key.over), span));
      const length = times[k] - start;
      if (length > 0) {
        const u = Math.min(Math.max((t - start) / length, 0), 1);
        const w = ease(key.ease ?? "smooth", u);
        mix = {};
        for (const name of new Set([...Object.keys(coeffs[k - 1]), ...Object.keys(coeffs[k])])) {
          mix[name] = (1 - w) * (coeffs[k - 1][name] ?? 0) + w * (coeffs[k][name] ?? 0);
        }
      }
    }
  }
  mix.neutral = 1 - Object.values(mix).reduce((sum, c) => sum + c, 0);
  return mix;
}
