"""The form and JSON adapter of :class:`~smartswitch.admin.source.Given`: one entity that a web
form or a REST API body describes.

* Blank values (empty or spaces only, JSON null) are left out: the field takes its default.
* Scalars are read as the text an operator would have typed: JSON numbers and booleans as
  their text, but never a JSON float (``0.1`` is refused with "give 0.1 as text"): money and
  prefixes must arrive exact.
* A list is a JSON array, or form text with one item a line (or comma-separated); the reader
  says how a line of text spells a structured item (``PEER PRIORITY WEIGHT``).
* A sub-object (a peer's ``register``) is a JSON object, or the form's fields named after it
  (``register_username``, ``register_password``, ...).
* Issues name the field (``acl[1]``, ``suppliers[0].peer``); there are no lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from smartswitch.admin.source import Given, Invalid, Issues, Kind, LineFormat, join

__all__ = ["FormGiven", "read_form"]

T = TypeVar("T")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class FormGiven:
    """A submitted value (form text or a JSON value) at a field path."""

    __slots__ = ("issues", "keys", "path", "value")

    line = None
    is_null = False

    def __init__(
        self, value: Any, path: str, issues: Issues, keys: frozenset[str] = frozenset()
    ) -> None:
        self.value, self.path, self.issues, self.keys = value, path, issues, keys

    def _at(self, value: Any, path: str) -> FormGiven:
        return FormGiven(value, path, self.issues)

    @property
    def is_scalar(self) -> bool:
        return not isinstance(self.value, Mapping | list | tuple)

    def text(self, kind: Kind) -> str:
        value = self.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if isinstance(value, int | Decimal):
            return str(value)
        if isinstance(value, float):
            raise ValueError(f"give {value!r} as text (a JSON string) so it stays exact")
        raise ValueError(f"expected {kind.value}, got {type(value).__name__}")

    def fields(self, allowed: tuple[str, ...]) -> dict[str, FormGiven]:
        data = self.value
        if not isinstance(data, Mapping):
            self.report("expected a mapping (name: value, ...)")
            raise Invalid
        found: dict[str, FormGiven] = {}
        for name in allowed:
            value = data.get(name)
            if name in self.keys or not _blank(value):
                found[name] = self._at(value, join(self.path, name))
                continue
            # A sub-object in a flat form: its fields are NAME_FIELD.
            prefix = f"{name}_"
            flat = {
                k.removeprefix(prefix): v
                for k, v in data.items()
                if isinstance(k, str) and k.startswith(prefix) and not _blank(v)
            }
            if flat:
                found[name] = self._at(flat, join(self.path, name))
        return found

    def items(self, line_format: LineFormat | None = None) -> list[FormGiven]:
        value = self.value
        if isinstance(value, str):
            lines = [p.strip() for p in value.replace(",", "\n").splitlines() if p.strip()]
            value = lines if line_format is None else [line_format(line) for line in lines]
        if not isinstance(value, list | tuple):
            self.report("expected a list")
            raise Invalid
        return [self._at(item, f"{self.path}[{i}]") for i, item in enumerate(value)]

    def report(self, message: str, field: str | None = None) -> None:
        self.issues.add(None, self.path if field is None else join(self.path, field), message)


def read_form(
    read: Callable[[Given], T],
    source: str,
    data: Mapping[str, Any],
    key: tuple[str, str] | None = None,
) -> T:
    """``read`` applied to submitted ``data``; raises :class:`ConfigInvalid` listing every
    bad field. ``key``: the entity's identifying field when it comes from elsewhere (the URL,
    the page being edited), given even when empty (``""``, the default route's prefix)."""
    issues = Issues(source)
    if key is not None:
        data = {**data, key[0]: key[1]}
    given = FormGiven(data, "", issues, frozenset({key[0]}) if key else frozenset())
    try:
        result = read(given)
    except Invalid:
        issues.check()
        raise
    issues.check()
    return result
