"""The example workflows as files: every node of the pack is in one, and each has its API twin.

The browser tests (``test_browser.py``) check that the frontend turns each example into its twin and runs
it; these checks need no ComfyUI.
"""

from __future__ import annotations

from dicetalk_harness import EXAMPLE_NAMES, WORKFLOWS, api_workflow, pack_node_ids, ui_workflow

NOTES = ("Note", "MarkdownNote")


def test_every_node_of_the_pack_appears_in_an_example():
    used = {node["type"] for name in EXAMPLE_NAMES for node in ui_workflow(name)["nodes"]}
    missing = sorted(set(pack_node_ids()) - used)
    assert not missing, f"nodes of NODE_CLASS_MAPPINGS in no example_workflows/*.json: {missing}"


def test_every_example_has_an_api_twin_with_its_nodes():
    assert sorted(path.name for path in WORKFLOWS.glob("*_api.json")) == sorted(f"{n}_api.json" for n in EXAMPLE_NAMES)
    for name in EXAMPLE_NAMES:
        nodes = {str(n["id"]): n["type"] for n in ui_workflow(name)["nodes"] if n["type"] not in NOTES}
        assert {node_id: node["class_type"] for node_id, node in api_workflow(name).items()} == nodes, name


def test_every_example_has_a_note_and_saves_its_video_under_its_name():
    for name in EXAMPLE_NAMES:
        nodes = ui_workflow(name)["nodes"]
        assert any(n["type"] in NOTES and n["widgets_values"][0].strip() for n in nodes), f"{name} has no Note"
        (save,) = [n for n in api_workflow(name).values() if n["class_type"] == "SaveVideo"]
        assert save["inputs"]["filename_prefix"] == f"dicetalk/{name}"
