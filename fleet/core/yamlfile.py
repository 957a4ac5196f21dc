"""YAML as a fleet file needs it: safe, with a key given twice an error, and errors told in one line."""

from __future__ import annotations

from typing import Any

import yaml


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what YAML found and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last
    silently: a second ``sms-spam:`` would replace the first specialist without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(
                    f"duplicate key {key!r} on line {key_node.start_mark.line + 1} (first on line {seen[key] + 1})"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def strict_yaml(text: str) -> Any:
    """Parse ``text`` with the safe loader that refuses duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
