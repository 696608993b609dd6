/**
 * The length of the clip an emotion timeline will be laid over, found in the browser.
 *
 * From the timeline node it follows the graph downstream to a DICE-Talk Emotion Bank, from there
 * upstream to the DICE-Talk Audio Encoder on the bank's `audio_features`, and from the encoder to the
 * node on its `audio` input (Load Audio: its `audio` widget names a file in ComfyUI's input folder).
 * The file is fetched from the server's `/view` route and decoded with the Web Audio API at the audio
 * front end's sample rate, so the frame count is the one the Python side computes (`framesFromSamples`).
 * The encoder's `duration` widget, when above 0, trims or pads to that many seconds, as in Python.
 */

import { SAMPLE_RATE, framesFromSamples } from "./keyframes.js";

const ENCODER = "DICEAudioEncoder";
const BANK = "DICEEmotionBank";

/** Decoded lengths (samples at SAMPLE_RATE) by URL, shared by every timeline node. */
const decoded = new Map();

// Links are followed through the node's own methods (the input/output link fields are deprecated in later frontends).

function upstream(node, inputName) {
  const slot = node.inputs?.findIndex((i) => i.name === inputName) ?? -1;
  return slot < 0 ? null : node.getInputNode(slot);
}

function downstreamBanks(start) {
  const seen = new Set([start.id]);
  const queue = [start];
  const banks = [];
  while (queue.length) {
    const node = queue.shift();
    (node.outputs ?? []).forEach((_, slot) => {
      for (const target of node.getOutputNodes(slot) ?? []) {
        if (seen.has(target.id)) continue;
        seen.add(target.id);
        if (target.type === BANK) banks.push(target);
        else queue.push(target);
      }
    });
  }
  return banks;
}

function splitAnnotated(value) {
  const match = /^(.*?)\s*\[(input|output|temp)\]$/.exec(value);
  const [path, type] = match ? [match[1], match[2]] : [value, "input"];
  const cut = path.lastIndexOf("/");
  return { subfolder: cut < 0 ? "" : path.slice(0, cut), filename: cut < 0 ? path : path.slice(cut + 1), type };
}

/**
 * Where the clip's length comes from, following the graph (see the module doc).
 * @returns {{file: string|null, url: string|null, seconds: number}|null} `seconds` > 0 when the
 *   encoder's `duration` fixes the length; null when no audio encoder is reachable.
 */
export function clipSource(node, apiURL) {
  if (!node.graph) return null;
  for (const bank of downstreamBanks(node)) {
    const encoder = upstream(bank, "audio_features");
    if (encoder?.type !== ENCODER) continue;
    const seconds = Number(encoder.widgets?.find((w) => w.name === "duration")?.value) || 0;
    const loader = upstream(encoder, "audio");
    const value = loader?.widgets?.find((w) => w.name === "audio")?.value;
    if (typeof value !== "string" || !value) return { file: null, url: null, seconds };
    const { subfolder, filename, type } = splitAnnotated(value);
    const query = new URLSearchParams({ filename, type, subfolder });
    return { file: value, url: apiURL(`/view?${query}`), seconds };
  }
  return null;
}

/**
 * Generated frames of the clip behind `source`: from the encoder's duration, else from the decoded
 * file. Resolves to null when the file cannot be read (the widget then keeps its own default).
 * @param {{url: string|null, seconds: number}} source
 * @returns {Promise<number|null>}
 */
export async function clipFrames(source) {
  if (source.seconds > 0) return framesFromSamples(Math.round(source.seconds * SAMPLE_RATE));
  if (!source.url) return null;
  if (!decoded.has(source.url)) {
    decoded.set(
      source.url,
      (async () => {
        const response = await fetch(source.url);
        if (!response.ok) return null;
        const context = new OfflineAudioContext(1, 1, SAMPLE_RATE);
        const buffer = await context.decodeAudioData(await response.arrayBuffer());
        return buffer.length;
      })().catch(() => null),
    );
  }
  const samples = await decoded.get(source.url);
  return samples == null ? null : framesFromSamples(samples);
}
