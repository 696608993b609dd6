"""A workflow saved by ComfyUI's frontend (UI format) turned into the API prompt that ``POST /prompt`` takes.

The frontend's ``graphToPrompt`` does this in the browser; :func:`to_api` does it from the saved file and a
running server's ``/object_info``, so the example workflows stay the only hand-kept graphs:

* each node's ``widgets_values`` are matched, in order, to the widgets its ``inputs`` list names (the
  frontend lists every widget there); a seed-like INT widget is followed by the frontend's
  ``control_after_generate`` value, which is not an input;
* widgets the frontend adds to media nodes (``upload``, ``audioUI``) are left out: no node declares them,
  and the server ignores them (one frontend sends ``audioUI``, another does not);
* a linked input becomes ``[source node id, output slot]``, followed through Reroute nodes; an input fed
  by a PrimitiveNode keeps its widget value, and one fed by a node left out is left out, as in the frontend;
* Note, Reroute, PrimitiveNode and muted nodes are left out.

Standard library only, so the setup script can use it before anything is installed.
"""

from __future__ import annotations

from typing import Any

UI_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
"""Node types that exist only in the editor."""
FRONTEND_WIDGETS = frozenset({"upload", "audioUI"})
"""Widgets the frontend adds to media nodes; no node declares them."""
CONTROL_AFTER_GENERATE_DEFAULT = ("seed", "noise_seed")
"""INT inputs with these names get the frontend's control widget unless they say otherwise."""
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted with the given ``/object_info``."""


def _has_control_widget(name: str, spec: list[Any]) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate", name in CONTROL_AFTER_GENERATE_DEFAULT))


def _widget_inputs(node: dict[str, Any], declared: dict[str, list[Any]]) -> dict[str, Any]:
    """The node's widget values by input name."""
    where = f"node {node['id']} ({node['type']})"
    names = [entry["name"] for entry in node.get("inputs", []) if entry.get("widget")]
    values = node.get("widgets_values") or []
    if not isinstance(values, list):
        raise WorkflowError(f"{where}: widget values saved by name are not supported; re-save the workflow")
    inputs: dict[str, Any] = {}
    index = 0
    for name in names:
        if index >= len(values):
            raise WorkflowError(f"{where}: {len(values)} widget values for the widgets {names}")
        value, index = values[index], index + 1
        if name in declared:
            inputs[name] = value
            index += _has_control_widget(name, declared[name])
        elif name not in FRONTEND_WIDGETS:
            raise WorkflowError(f"{where}: the server's node has no input '{name}'")
    if index != len(values):
        raise WorkflowError(f"{where}: {len(values)} widget values for the widgets {names}")
    return inputs


def _source(link_id: int | None, nodes: dict[int, dict[str, Any]], links: dict[int, tuple[int, int]]) -> list | None:
    """``[node id, slot]`` of the node that feeds a link, through Reroutes; None when no node feeds a value."""
    while link_id is not None:
        origin, slot = links[link_id]
        if nodes[origin]["type"] != "Reroute":
            return None if nodes[origin]["type"] in UI_ONLY else [str(origin), slot]
        link_id = nodes[origin]["inputs"][0].get("link")
    return None


def to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The API prompt of a UI-format ``workflow``, with the node definitions of ``object_info``."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported; unpack the subgraphs first")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        key, origin, slot = (link["id"], link["origin_id"], link["origin_slot"]) if isinstance(link, dict) else link[:3]
        links[key] = (origin, slot)
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY or node.get("mode", 0) == MUTED:
            continue
        if node.get("mode", 0) == BYPASSED:
            raise WorkflowError(f"node {node['id']} ({node['type']}) is bypassed: enable or remove it")
        if node["type"] not in object_info:
            raise WorkflowError(f"node {node['id']}: the server has no node type '{node['type']}'")
        spec = object_info[node["type"]]["input"]
        inputs = _widget_inputs(node, {**spec.get("required", {}), **spec.get("optional", {})})
        for entry in node.get("inputs", []):
            source = _source(entry.get("link"), nodes, links)
            if source is not None:
                inputs[entry["name"]] = source
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    for node in prompt.values():  # inputs fed by nodes left out (muted ones) are left out too
        node["inputs"] = {k: v for k, v in node["inputs"].items() if not (isinstance(v, list) and v[0] not in prompt)}
    return prompt
