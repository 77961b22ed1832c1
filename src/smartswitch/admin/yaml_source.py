"""The YAML adapter of :class:`~smartswitch.admin.source.Given`: a provisioning file.

The file is *composed* (parsed to nodes) rather than loaded, so every value keeps its line
(PyYAML's node marks) and its source text: unquoted digits are the text written ("0044"
stays "0044", not YAML 1.1's octal 36), numbers are never read through float, and YAML's own
types are refused where text was meant (``expected text, got bool 'yes' (quote it)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from smartswitch.admin.source import Given, Invalid, Issues, Kind, LineFormat, join
from smartswitch.admin.writer import ConfigInvalid, Issue

__all__ = ["YamlGiven", "read_yaml"]

T = TypeVar("T")

_TAG = "tag:yaml.org,2002:"
# The tags each kind accepts; a value's source text is what is read, whatever its tag.
_TAGS = {
    Kind.TEXT: ("str", "int"),
    Kind.DECIMAL: ("str", "int", "float"),
    Kind.INTEGER: ("str", "int"),
    Kind.BOOL: ("str", "bool"),
}


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class YamlGiven:
    """A composed YAML node at a field path."""

    __slots__ = ("issues", "loader", "node", "path")

    def __init__(self, node: Node, path: str, issues: Issues, loader: yaml.SafeLoader) -> None:
        self.node, self.path, self.issues, self.loader = node, path, issues, loader

    def _at(self, node: Node, path: str) -> YamlGiven:
        return YamlGiven(node, path, self.issues, self.loader)

    @property
    def line(self) -> int:
        return _line(self.node)

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, ScalarNode) and self.node.tag == _TAG + "null"

    @property
    def is_scalar(self) -> bool:
        return isinstance(self.node, ScalarNode)

    def text(self, kind: Kind) -> str:
        node = self.node
        if not isinstance(node, ScalarNode):
            shape = "list" if isinstance(node, SequenceNode) else "mapping"
            raise ValueError(f"expected {kind.value}, got a {shape}")
        tag = node.tag.removeprefix(_TAG)
        if kind is Kind.TEXT and tag not in _TAGS[kind]:
            raise ValueError(f"expected text, got {tag} {node.value!r} (quote it)")
        if kind is Kind.BOOL:
            # YAML 1.1's words (yes/no/on/off too), as the YAML the operator wrote means them.
            value = yaml.constructor.SafeConstructor.bool_values.get(node.value.lower())
            if tag not in _TAGS[kind] or value is None:
                raise ValueError(f"expected true or false, got {node.value!r}")
            return "true" if value else "false"
        if kind in _TAGS and tag not in _TAGS[kind]:
            raise ValueError(f"expected {kind.value}, got {node.value!r}")
        return str(node.value)

    def fields(self, allowed: tuple[str, ...]) -> dict[str, YamlGiven]:
        node = self.node
        if not isinstance(node, MappingNode):
            self.report("expected a mapping (name: value, ...)")
            raise Invalid
        seen: dict[str, int] = {}
        for key, _value in node.value:
            if key.tag == _TAG + "merge":
                continue
            name = key.value if isinstance(key, ScalarNode) else "?"
            if name in seen:
                self._report_at(
                    key, join(self.path, name), f"given twice (first on line {seen[name]})"
                )
            seen[name] = _line(key)
        try:
            self.loader.flatten_mapping(node)  # resolve "<<: *anchor" merge keys
        except yaml.MarkedYAMLError as exc:
            self.report(f"bad merge key: {exc.problem}")
            raise Invalid from None
        found: dict[str, YamlGiven] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                self._report_at(key, self.path, "field names must be plain text")
            elif key.value not in allowed:
                self._report_at(
                    key,
                    join(self.path, key.value),
                    f"unknown field (expected one of {', '.join(allowed)})",
                )
            else:
                found[key.value] = self._at(value, join(self.path, key.value))
        return found

    def items(self, line_format: LineFormat | None = None) -> list[YamlGiven]:
        if self.is_null:
            return []
        if not isinstance(self.node, SequenceNode):
            self.report("expected a list")
            raise Invalid
        return [self._at(item, f"{self.path}[{i}]") for i, item in enumerate(self.node.value)]

    def report(self, message: str, field: str | None = None) -> None:
        path = self.path if field is None else join(self.path, field)
        self._report_at(self.node, path, message)

    def _report_at(self, node: Node, path: str, message: str) -> None:
        self.issues.add(_line(node), path, message)


def read_yaml(text: str, file: str, read: Callable[[Given | None], T]) -> T:
    """``read`` applied to the document's root (None when the document is empty); raises
    :class:`ConfigInvalid` naming the file and lines if the YAML or anything read is invalid."""
    loader = yaml.SafeLoader(text)
    issues = Issues(file)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else mark.line + 1
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigInvalid([Issue(file, line, "", f"invalid YAML: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise ConfigInvalid([Issue(file, None, "", f"invalid YAML: {exc}")]) from None
        given = None if root is None else YamlGiven(root, "", issues, loader)
        try:
            result = read(None if given is None or given.is_null else given)
        except Invalid:
            issues.check()
            raise
    finally:
        loader.dispose()
    issues.check()
    return result
