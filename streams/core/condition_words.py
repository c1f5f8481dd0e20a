"""What is wrong with a rule's ``when:``, in words: syntax slips, and comparisons that can never be true.

A condition that does not parse gets the likely slip (``=`` for ``==``, ``&&`` for ``and``)
instead of Jinja's "chunk after expression". A comparison of a field with a literal is held
against the field's schema: ``customer.tier == 'gold'`` is never true (the tiers are basic,
standard, premium), ``customer.tier == premium`` compares with a variable nothing defines,
``event.data.total == '5'`` compares a number with text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from jinja2 import nodes

from streams.core.schema_words import suggest

# (root, path) of a field -> the schemas it has in the events the rule listens to (None where it has none).
SchemaAt = Callable[[str, list[tuple[str, str | int]]], list[dict[str, Any]]]
CONDITION_ROOTS = frozenset({"event", "customer"})
_JSON_KIND = {str: "string", bool: "boolean", int: "number", float: "number"}
_KIND_WORDS = {"string": "text", "number": "a number", "integer": "a number", "boolean": "true or false"}
_SLIPS = (
    (re.compile(r"(?<![=!<>])=(?!=)"), "'=' sets a value; to compare, write '=='"),
    (re.compile(r"&&"), "write 'and' instead of '&&'"),
    (re.compile(r"\|\|"), "write 'or' instead of '||'"),
    (re.compile(r"!(?!=)"), "write 'not' instead of '!'"),
)
_JINJA_WORDS = {
    "chunk after expression": "something follows a complete expression; is an 'and' or 'or' missing?",
    "unexpected end of template": "the expression stops too early; is a value or a closing bracket missing?",
}


def syntax_problem(source: str, jinja_message: str) -> str:
    """Why ``source`` does not parse, in words, with the likely fix first."""
    for pattern, words in _SLIPS:
        if pattern.search(_without_strings(source)):
            return words
    if _without_strings(source).count("(") != _without_strings(source).count(")"):
        return "the brackets do not pair up"
    if source.count("'") % 2 or source.count('"') % 2:
        return "a quote is not closed"
    for jinja, words in _JINJA_WORDS.items():
        if jinja in jinja_message:
            return words
    return jinja_message


_MENDS = ((re.compile(r"(?<![=!<>])=(?!=)"), "=="), (re.compile(r"&&"), " and "), (re.compile(r"\|\|"), " or "),
          (re.compile(r"!(?!=)"), " not "))


def repaired(source: str) -> str | None:
    """``source`` with the slips of ``_SLIPS`` mended outside quoted text, or None if it has none."""
    parts = re.split(r"('[^']*'|\"[^\"]*\")", source)
    mended = []
    for index, part in enumerate(parts):
        if index % 2 == 0:  # outside quotes
            for pattern, replacement in _MENDS:
                part = pattern.sub(replacement, part)
        mended.append(part)
    text = "".join(mended)
    return text if text != source else None


def _without_strings(source: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", source)


@dataclass(frozen=True)
class _Side:
    """One side of a comparison: a field path, a literal, or a bare name."""

    field: tuple[str, list[tuple[str, str | int]]] | None = None
    literals: tuple[Any, ...] = ()
    listed: bool = False  # the literals are a list or tuple, not one value
    name: str | None = None


def comparison_problems(tree: nodes.Node, schema_at: SchemaAt) -> list[tuple[str, str | None]]:
    """(message, bare name it explains or None) for each comparison of a field that cannot come out as meant."""
    found = []
    for left, op, right in _comparisons(tree):
        for field_side, other in ((left, right), (right, left)):
            if field_side.field is None or (op in ("in", "notin") and (
                    field_side is right or isinstance(right.literals[:1] and right.literals[0], str)
                    and len(right.literals) == 1 and not right.listed)):
                continue  # a field that holds the values, or a substring test
            schemas = schema_at(*field_side.field)
            shown = _shown_field(field_side.field)
            if other.name is not None:
                found.append((_bare_name(shown, other.name, schemas), other.name))
            for literal in other.literals:
                problem = _literal_problem(shown, literal, op, schemas)
                if problem:
                    found.append((problem, None))
    return found


def bare_name_problem(name: str) -> str:
    return (f"'{name}' is not a field or a value: text needs quotes ('{name}'), "
            "and fields start with event. or customer.")


def _bare_name(shown: str, name: str, schemas: list[dict[str, Any]]) -> str:
    values = [v for schema in schemas for v in schema.get("enum", ())]
    meant = suggest(name, [v for v in values if isinstance(v, str)])
    if meant:
        return f"compares {shown} with {name}, a name nothing defines; write '{meant}' in quotes"
    return f"compares {shown} with {bare_name_problem(name)}"


def _literal_problem(shown: str, literal: Any, op: str, schemas: list[dict[str, Any]]) -> str | None:
    values = [v for schema in schemas for v in schema.get("enum", ())]
    if values and op in ("eq", "ne", "in", "notin") and literal not in values:
        meant = suggest(literal, [v for v in values if isinstance(v, str)]) if isinstance(literal, str) else None
        listed = ", ".join(str(v) for v in values)
        return (f"compares {shown} with {literal!r}, which it never is (its values: {listed})"
                + (f"; did you mean '{meant}'?" if meant else ""))
    kinds = {schema.get("type") for schema in schemas if isinstance(schema.get("type"), str)}
    literal_kind = _JSON_KIND.get(type(literal))
    if literal is None or literal_kind is None or not kinds or _same_kind(literal_kind, kinds):
        return None
    field_kind = _KIND_WORDS.get(sorted(kinds)[0], sorted(kinds)[0])
    fix = (f"write {literal} without quotes" if literal_kind == "string" and _numeric(literal)
           else f"write '{literal}'" if literal_kind != "string" else "compare it with a value of its kind")
    outcome = "they are never equal" if op in ("eq", "ne", "in", "notin") else "comparing them fails on every event"
    return f"compares {shown}, {field_kind}, with {_KIND_WORDS[literal_kind]} {literal!r}: {outcome}; {fix}"


def _same_kind(literal_kind: str, kinds: set[str]) -> bool:
    return literal_kind in kinds or (literal_kind == "number" and "integer" in kinds)


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", text))


def _shown_field(field: tuple[str, list[tuple[str, str | int]]]) -> str:
    root, path = field
    return root + "".join(f".{name}" if how == "attr" else f"[{name!r}]" for how, name in path)


def _comparisons(tree: nodes.Node) -> Iterator[tuple[_Side, str, _Side]]:
    for compare in tree.find_all(nodes.Compare):
        left = compare.expr
        for operand in compare.ops:
            yield _side(left), operand.op, _side(operand.expr)
            left = operand.expr


def _side(node: nodes.Node) -> _Side:
    if isinstance(node, nodes.Const):
        return _Side(literals=(node.value,))
    if isinstance(node, (nodes.List, nodes.Tuple)) and all(isinstance(i, nodes.Const) for i in node.items):
        return _Side(literals=tuple(i.value for i in node.items), listed=True)
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return _Side(name=node.name) if node.name not in CONDITION_ROOTS else _Side()
    path: list[tuple[str, str | int]] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            path.append(("attr", node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            path.append(("item", node.arg.value))
        else:
            return _Side()
        node = node.node
    if isinstance(node, nodes.Name) and node.name in CONDITION_ROOTS and path:
        return _Side(field=(node.name, list(reversed(path))))
    return _Side()
