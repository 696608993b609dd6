"""The emotion grammar and the JSON form: what they understand, what they build, and their errors."""

from __future__ import annotations

import json

import pytest
import torch
from test_emotion_mixing import official_library, random_library

from dicetalk_core.emotion import TimeMark, emotion_from_spec, parse_emotion_spec, parse_emotion_text
from dicetalk_core.emotion.text import ADVERBS
from dicetalk_core.errors import InputError


def terms(spec):
    return [(t.name, t.weight, pytest.approx(t.intensity)) for t in spec.terms]


def test_slightly_sad_then_very_happy():
    first, second = parse_emotion_text("slightly sad, then very happy")
    assert terms(first) == [("sad", 1.0, 0.5)]
    assert terms(second) == [("happy", 1.0, 1.25)]
    assert first.at is None and second.at is None  # spread evenly: 0% and 50%
    assert (second.ease, second.over) == ("smooth", TimeMark(0.5))


@pytest.mark.parametrize("joint", ["; ", " -> ", " => ", " \u2192 ", ", then "])
def test_every_way_of_writing_then_splits_the_same(joint):
    assert parse_emotion_text(f"slightly sad{joint}very happy") == parse_emotion_text("slightly sad then very happy")


def test_times_transitions_mixes_and_synonyms():
    specs = parse_emotion_text(
        "Neutral -> joyful and a bit surprised at 2s over 1 s; then suddenly furious at frame 60, "
        "then gradually 70% sad and 30% scared at 90%."
    )
    assert [terms(s) for s in specs] == [
        [("neutral", 1.0, 1.0)],
        [("happy", 1.0, 1.0), ("surprised", 1.0, 0.5)],
        [("angry", 1.0, 1.4)],
        [("sad", 0.7, 1.0), ("fear", 0.3, 1.0)],
    ]
    assert [s.at for s in specs] == [None, TimeMark(2.0), TimeMark(60, "f"), TimeMark(90, "%")]
    assert [(s.ease, s.over) for s in specs[1:]] == [
        ("smooth", TimeMark(1.0)),
        ("hold", None),
        ("linear", None),
    ]


def test_numeric_intensity_stacked_adverbs_slots_and_saved_names():
    (spec,) = parse_emotion_text("happy:1.2 with very very sad and emotion_2 plus My_Smirk", extra_names=["my_smirk"])
    assert terms(spec) == [
        ("happy", 1.0, 1.2),
        ("sad", 1.0, 1.5625),
        ("emotion_2", 1.0, 1.0),
        ("my_smirk", 1.0, 1.0),
    ]
    (spec,) = parse_emotion_text("looking a little bit happy")
    assert terms(spec) == [("happy", 1.0, ADVERBS["a little bit"])]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("slightly hungry", "'hungry'"),
        ("not happy", "'not'"),
        ("happy then", "both sides"),
        ("very", "not followed by an emotion"),
        ("happy at soon", "not a time"),
        ("happy ^ sad", "Unexpected character"),
        ("", "empty"),
    ],
)
def test_errors_list_the_understood_words(text, fragment):
    with pytest.raises(InputError) as info:
        parse_emotion_text(text)
    message = str(info.value)
    assert fragment in message
    if fragment.startswith("'") or "Unexpected" in fragment or fragment == "empty":
        for word in ("angry", "joyful", "slightly", "extremely", "then", "at 2s", "suddenly", "emotion_1"):
            assert word in message


def test_json_form_and_its_errors(tmp_path):
    lib = random_library(tmp_path)
    specs, source = parse_emotion_spec(
        json.dumps(
            {
                "keyframes": [
                    {"at": "0s", "emotion": "neutral"},
                    {"at": 2, "emotion": {"happy": 0.7, "sad": 0.3}, "ease": "linear", "intensity": 1.2},
                    {"emotion": "very surprised", "over": "0.5s"},
                ]
            }
        )
    )
    assert source == "json"
    assert [s.at for s in specs] == [TimeMark(0), TimeMark(2), None]
    assert terms(specs[1]) == [("happy", 0.7, 1.0), ("sad", 0.3, 1.0)] and specs[1].intensity == 1.2
    assert (specs[2].ease, specs[2].over) == ("smooth", TimeMark(0.5))  # JSON: over the given length only
    assert specs[1].over is None  # JSON default: over the whole gap
    (mix,), _ = parse_emotion_spec('{"happy": 2, "slightly angry": 1}')
    assert terms(mix) == [("happy", 2.0, 1.0), ("angry", 1.0, 0.5)]
    for bad, fragment in [
        ('[{"at": "1s", "emotoin": "happy"}]', "unknown keys ['emotoin']"),
        ('[{"emotion": "happy", "ease": "bouncy"}]', "keyframes[0].ease"),
        ('[{"emotion": "happy", "at": "later"}]', "keyframes[0].at"),
        ('[{"emotion": "hapy"}]', "keyframes[0].emotion"),
        ('{"happy": -1, "sad": 1}', "not negative"),
        ("[", "not valid JSON"),
        ("[]", "empty"),
    ]:
        with pytest.raises(InputError) as info:
            emotion_from_spec(bad, lib)
        assert fragment in str(info.value)


def test_text_builds_the_intended_priors_on_the_official_presets():
    lib = official_library()
    n, sad, happy = lib.prior("neutral"), lib.prior("sad"), lib.prior("happy")
    emotion = emotion_from_spec("slightly sad, then very happy", lib)
    assert not emotion.is_static
    frames = emotion.priors(51)  # 4 s: happy is reached at 2 s (frame 25), the change starts at 1.5 s
    assert torch.allclose(frames[0], n + 0.5 * (sad - n), atol=1e-5)
    assert torch.allclose(frames[18], frames[0])
    assert torch.allclose(frames[25], n + 1.25 * (happy - n), atol=1e-5)
    assert torch.allclose(frames[50], frames[25])
    assert emotion.provenance["source"] == "text" and set(emotion.provenance["presets"]) == {"sad", "happy", "neutral"}
    assert len(emotion.provenance["presets"]["sad"]["sha256"]) == 64
    fixed = emotion_from_spec("70% happy and 30% sad", lib)
    assert fixed.is_static
    assert torch.allclose(fixed.prior(), 0.7 * happy + 0.3 * sad, atol=1e-5)


def test_slots_must_be_connected_and_fixed(tmp_path):
    from dicetalk_core.emotion import Emotion, Keyframe, Timeline

    lib = random_library(tmp_path)
    with pytest.raises(InputError, match="no emotion is connected to the input emotion_1"):
        emotion_from_spec("emotion_1 then happy", lib)
    custom = Emotion.constant(torch.full((256,), 0.1), "custom")
    emotion = emotion_from_spec("emotion_1 then happy at 1s", lib, {"emotion_1": custom})
    assert torch.equal(emotion.priors(30)[0], custom.prior())
    moving = Emotion.from_timeline(Timeline((Keyframe(torch.zeros(256)), Keyframe(torch.ones(256)))))
    with pytest.raises(InputError, match="changes over time"):
        emotion_from_spec("emotion_1", lib, {"emotion_1": moving})
    without_neutral = random_library(tmp_path / "no_neutral", ("happy", "sad"))
    with pytest.raises(InputError, match="neutral"):
        emotion_from_spec("very happy", without_neutral)
