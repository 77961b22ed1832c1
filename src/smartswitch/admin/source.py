"""What an operator gave, from any front door: the field-source protocol the readers use.

Every entity is read once (:mod:`.readers`) against :class:`Given`: something given at a
field path (``peers[0].acl[1]`` in a file, ``acl[1]`` in a form), with the line it was written
on when there is one. Two adapters give it:

* :mod:`.yaml_source`: a provisioning file's composed YAML nodes. Issues carry the file and
  line; unquoted digits keep their source text; YAML's own types (null, booleans, floats) are
  refused where they would be a mistake.
* :mod:`.form_source`: a web form's text fields (lists one item a line or comma-separated) and
  a JSON body (floats refused: money and prefixes must arrive as exact text).

A reader checks each field's syntax (through :mod:`.fields`) and reports every bad field at
once. The rules between fields and between entities are the writer's (:mod:`.writer`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from smartswitch.admin.writer import ConfigInvalid, Issue, Ref

__all__ = [
    "Entity",
    "FieldRead",
    "Given",
    "Invalid",
    "Issues",
    "Kind",
    "LineFormat",
    "Parser",
    "each",
    "join",
    "optional",
    "read_all",
    "read_entity",
    "required",
]

T = TypeVar("T")
D = TypeVar("D")

# How one line of a form's text list becomes the fields of a list item ("PEER 1 70").
LineFormat = Callable[[str], Mapping[str, str]]


class Kind(enum.Enum):
    """What a scalar is read as; each adapter says in its own words why a value is not one."""

    TEXT = "text"
    DECIMAL = "a decimal number"
    INTEGER = "a whole number"
    BOOL = "true or false"
    TIME = "a date and time"


class Invalid(Exception):
    """A field was invalid and has been reported: skip what depends on it."""


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class Issues:
    """The problems found in one input (a file, a form, a JSON body), in the order found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: list[Issue] = []

    def add(self, line: int | None, path: str, message: str) -> None:
        self.found.append(Issue(self.file, line, path, message))

    def check(self) -> None:
        """Raise :class:`ConfigInvalid` listing them (by line) if there are any."""
        if self.found:
            raise ConfigInvalid(sorted(self.found, key=lambda i: i.line or 0))


class Given(Protocol):
    """Something given at ``path``: a scalar, a list or a mapping."""

    @property
    def line(self) -> int | None:
        """The line it was written on (None outside a file)."""

    @property
    def path(self) -> str: ...

    @property
    def is_null(self) -> bool:
        """An explicit "nothing" (YAML's null); forms and JSON leave such fields out."""

    @property
    def is_scalar(self) -> bool: ...

    def text(self, kind: Kind) -> str:
        """The scalar as the text that was written; ValueError (the operator's message) if it
        is not a scalar, or not a ``kind`` in this input's terms."""

    def fields(self, allowed: tuple[str, ...]) -> Mapping[str, Given]:
        """A mapping's fields among ``allowed`` (absent and blank ones left out); unknown
        fields are reported where the input has a vocabulary. Reports and raises
        :class:`Invalid` if it is not a mapping."""

    def items(self, line_format: LineFormat | None = None) -> Sequence[Given]:
        """A list's items; ``line_format`` reads a form's line of text into an item's fields.
        Reports and raises :class:`Invalid` if it is not a list."""

    def report(self, message: str, field: str | None = None) -> None:
        """An issue here, or at ``field`` of this mapping (reported at the mapping's line)."""


@dataclass(frozen=True, slots=True)
class Parser(Generic[T]):
    """How a field's text becomes its value: the scalar kind to ask for, then the parse
    (raising ValueError). ``nullable``: an explicit null means "none" rather than a mistake."""

    kind: Kind
    parse: Callable[[str], T]
    nullable: bool = False

    def __call__(self, given: Given) -> T | None:
        if self.nullable and given.is_null:
            return None
        return self.parse(given.text(self.kind))


class Entity:
    """The fields of one entity (or sub-object), each read and reported at its own place."""

    def __init__(self, given: Given, allowed: tuple[str, ...]) -> None:
        self.given = given
        self.line = given.line
        self.path = given.path
        self.fields = given.fields(allowed)

    def has(self, name: str) -> bool:
        return name in self.fields

    def line_of(self, name: str) -> int | None:
        field = self.fields.get(name)
        return self.line if field is None else field.line

    def get(self, name: str, parser: Parser[T], default: D) -> T | D:
        """The field's value, ``default`` if absent (or null, for a nullable parser); an
        invalid value is reported and raises :class:`Invalid`."""
        field = self.fields.get(name)
        if field is None:
            return default
        try:
            value = parser(field)
        except ValueError as exc:
            field.report(str(exc))
            raise Invalid from None
        return default if value is None else value

    def require(self, name: str, parser: Parser[T]) -> T:
        if name not in self.fields:
            self.given.report("required", name)
            raise Invalid
        value = self.get(name, parser, None)
        assert value is not None  # a required field's parser is not nullable
        return value

    def ref(self, name: str, parser: Parser[str], *, required: bool = False) -> Ref | None:
        """A reference by name to another entity, with where it was written."""
        if not required and name not in self.fields:
            return None
        return Ref(self.require(name, parser), self.line_of(name), join(self.path, name))

    def items(self, name: str, line_format: LineFormat | None = None) -> Sequence[Given]:
        field = self.fields.get(name)
        return () if field is None or field.is_null else field.items(line_format)


# How an entity's field is read: (the entity, the field's name) -> its value.
FieldRead = Callable[["Entity", str], Any]


def required(parser: Parser[Any]) -> FieldRead:
    return lambda e, name: e.require(name, parser)


def optional(parser: Parser[Any], default: Any) -> FieldRead:
    """The field, or ``default`` when it is left out."""
    return lambda e, name: e.get(name, parser, default)


def read_entity(given: Given, **fields: FieldRead) -> tuple[Entity, dict[str, Any]]:
    """An entity of exactly these fields (others are unknown), each read by its reader and
    every bad one reported; :class:`Invalid` at the end if any was."""
    e = Entity(given, tuple(fields))
    return e, read_all(**{name: partial(read, e, name) for name, read in fields.items()})


def read_all(**getters: Callable[[], Any]) -> dict[str, Any]:
    """Every getter evaluated, so that all the bad fields of an entity are reported together;
    :class:`Invalid` at the end if any was."""
    values: dict[str, Any] = {}
    failed = False
    for name, getter in getters.items():
        try:
            values[name] = getter()
        except Invalid:
            failed = True
    if failed:
        raise Invalid
    return values


def each(items: Sequence[Given], read: Callable[[Given], T]) -> tuple[list[T], bool]:
    """Every item read, the invalid ones (reported) skipped; whether any was invalid."""
    result: list[T] = []
    failed = False
    for item in items:
        try:
            result.append(read(item))
        except Invalid:
            failed = True
    return result, failed
