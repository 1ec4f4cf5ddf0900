"""YAML with line numbers: parse a study file keeping its node tree, refuse duplicate keys, and find the
line of any field path, so every error can say `file:LINE: field.path: what is wrong`.

The loader is `trainers.config.YamlLoader` (the one of trainer config files and `--set`): YAML 1.2 floats
(`1e-3` is a number), and a document whose aliases expand past `YAML_MAX_NODES` values is refused before
it is built. Knows nothing of the study schema (that is `sweeper.study`).
"""

from __future__ import annotations

from typing import Any

import yaml

from sweeper.errors import StudyError
from trainers.config import YamlLoader, check_node_budget, shown

Loc = tuple[str | int, ...]
MAX_PART = 60  # characters of one key shown in a field path


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        text = str(part)
        if len(text) > MAX_PART:
            text = f"{text[: MAX_PART // 2 - 2]}...{text[-(MAX_PART // 2 - 1) :]}"
        out += f"[{text}]" if isinstance(part, int) else f".{text}" if out else text
    return out


def parse_yaml(text: str, source: str) -> tuple[yaml.Node, dict[str, Any]]:
    loader = YamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            check_node_budget(root)
            check_duplicate_keys(root, (), source, set())
            data = loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = "" if mark is None else f":{mark.line + 1}"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if len(problem) > 200:  # a problem may quote the input (an unknown tag, say)
            problem = problem[:197] + "..."
        raise StudyError(f"{source}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise StudyError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if root is None or data is None:
        raise StudyError(f"{source}: empty study file")
    if not isinstance(data, dict):
        raise StudyError(
            f"{source}:{root.start_mark.line + 1}: expected a mapping of study keys (name, trainer, "
            f"variants, scale, sweep, ...), got {type(data).__name__}"
        )
    return root, data


def check_duplicate_keys(node: yaml.Node, path: Loc, source: str, seen: set[int]) -> None:
    """YAML lets a later key silently replace an earlier one; a study refuses."""
    if id(node) in seen:  # aliases can make the node graph cyclic
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                if ident in keys:
                    where = dotted((*path, key_node.value))
                    raise StudyError(
                        f"{source}:{key_node.start_mark.line + 1}: {where}: duplicate key {shown(key_node.value)}"
                    )
                keys.add(ident)
            check_duplicate_keys(value_node, (*path, str(key_node.value)), source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_duplicate_keys(item, (*path, i), source, seen)


def line_of(root: yaml.Node, loc: Loc) -> int:
    """1-based line of the deepest node along `loc` (a mapping entry's line is its key's)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            # The last match wins, as when YAML merges (<<) put inherited entries first.
            entry = next(
                (
                    (k, v)
                    for k, v in reversed(node.value)
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ),
                None,
            )
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
