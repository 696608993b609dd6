"""Class labels of emotion classifiers -> DICE-Talk presets, and class probabilities -> a prior.

Classifiers name their classes in many ways (``anger``/``angry``/``ang``, ``happiness``/``happy``/
``hap``...). A label is normalised (lower case, spaces and dashes to ``_``) and looked up in
:data:`LABEL_TO_PRESET`; labels not in the table (``boredom``, ``other``, ``LABEL_3``...) are
*unknown*: their probability is dropped, reported, and the rest renormalised.

The prior of a probability vector ``q`` over classes ``c`` is the probability-weighted mix of the
presets: ``prior = sum_c q_c p_{preset(c)} / sum_{c known} q_c`` (several labels mapping to one preset
add up). A preset that the table names but that is not installed is reported like an unknown label.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..errors import InputError

LABEL_TO_PRESET: dict[str, str] = {
    **dict.fromkeys(("angry", "anger", "ang", "mad", "rage"), "angry"),
    **dict.fromkeys(("contempt", "contemptuous", "con"), "contempt"),
    **dict.fromkeys(("disgust", "disgusted", "dis", "disgusting"), "disgusted"),
    **dict.fromkeys(("fear", "fearful", "fea", "afraid", "scared", "fright"), "fear"),
    **dict.fromkeys(("happy", "happiness", "hap", "joy", "joyful", "excited", "exc", "smile", "smiling"), "happy"),
    **dict.fromkeys(("neutral", "neu", "neutrality", "calm"), "neutral"),
    **dict.fromkeys(("sad", "sadness", "sorrow", "unhappy"), "sad"),
    **dict.fromkeys(
        ("surprised", "surprise", "sur", "surprising", "ps", "pleasant_surprise", "pleasant_surprised"),
        "surprised",
    ),
}


def normalise_label(label: str) -> str:
    return str(label).strip().lower().replace("-", "_").replace(" ", "_")


def preset_for_label(label: str) -> str | None:
    """The preset a class label stands for, or None when the label is not in the table."""
    return LABEL_TO_PRESET.get(normalise_label(label))


@dataclass(frozen=True)
class LabelMapping:
    """Probabilities per preset (renormalised over the usable mass) and what could not be used.

    Attributes:
        weights: preset -> weight (sums to 1).
        unknown: label -> probability, for labels not in the table.
        not_installed: label -> probability, for labels whose preset file is missing.
        usable: the probability mass that was used (before renormalising).
    """

    weights: dict[str, float]
    unknown: dict[str, float] = field(default_factory=dict)
    not_installed: dict[str, float] = field(default_factory=dict)
    usable: float = 1.0

    def report(self) -> str:
        lines = ["mapped: " + ", ".join(f"{p} {w:.3f}" for p, w in sorted(self.weights.items(), key=lambda x: -x[1]))]
        if self.unknown:
            lines.append(
                "unknown labels (ignored): " + ", ".join(f"{label!r} {p:.3f}" for label, p in self.unknown.items())
            )
        if self.not_installed:
            lines.append(
                "labels whose preset is not installed (ignored): "
                + ", ".join(
                    f"{label!r} -> {preset_for_label(label)} {p:.3f}" for label, p in self.not_installed.items()
                )
            )
        return "; ".join(lines)


def map_probabilities(probabilities: Mapping[str, float], installed: Collection[str]) -> LabelMapping:
    """Class probabilities (label -> p) -> preset weights; see the module docstring.

    Raises:
        InputError: no class maps to an installed preset (the message lists the labels and the table).
    """
    weights: dict[str, float] = {}
    unknown: dict[str, float] = {}
    missing: dict[str, float] = {}
    for label, p in probabilities.items():
        preset = preset_for_label(label)
        if preset is None:
            unknown[label] = float(p)
        elif preset not in installed:
            missing[label] = float(p)
        else:
            weights[preset] = weights.get(preset, 0.0) + float(p)
    usable = sum(weights.values())
    if usable <= 0:
        known = ", ".join(sorted(set(LABEL_TO_PRESET)))
        raise InputError(
            f"None of the classifier's classes ({', '.join(map(repr, probabilities))}) maps to an installed preset "
            f"(installed: {', '.join(sorted(installed)) or 'none'}). Known labels: {known}. Use a classifier whose "
            "config.json id2label names emotions, or install the presets."
        )
    return LabelMapping({p: w / usable for p, w in weights.items()}, unknown, missing, usable)
