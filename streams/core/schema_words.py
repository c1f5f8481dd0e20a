"""JSON Schema errors in the rules file, in the words of the ops person who wrote it.

jsonschema says ``Additional properties are not allowed ('tempalte' was unexpected)`` at
``rules/6``; this module says ``rule 'order-delayed': 'tempalte' is not a rule field; did you
mean 'template'?`` at the line of the key, and offers the repair (rename ``tempalte`` to
``template``) so that the rest of the rule can still be checked. Patterns are explained by the
``title`` and ``description`` their schema gives (``schemas/rules.json``), never by the regex.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable

from jsonschema.exceptions import ValidationError

KINDS = {"string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
         "array": "a list", "object": "a mapping (key: value lines)", "null": "empty"}
_PYTHON_KINDS = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


@dataclass(frozen=True)
class Finding:
    """One problem: where in the document (its path and, for a stray key, the key) and what to say."""

    path: tuple[str | int, ...]
    message: str
    key: str | None = None  # a key that should not be there: the line is this key's
    rename: tuple[str, str] | None = None  # (written, meant): the repair a "did you mean" suggests
    missing: str | None = None  # a required field that is not there


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely meant: the same but for case, else a close spelling."""
    choices = [str(c) for c in choices]
    for choice in choices:
        if choice.lower() == str(word).lower():
            return choice
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return close[0] if close else None


def kind_of(value: Any) -> str:
    for python, kind in _PYTHON_KINDS.items():
        if isinstance(value, python):
            return kind
    return "null" if value is None else type(value).__name__


def explain(error: ValidationError) -> list[Finding]:
    """Plain findings for one error of ``iter_errors``; a oneOf/anyOf is explained by the branch meant."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        branch = _branch_meant(error)
        if branch is None:
            return [Finding(tuple(error.absolute_path), f"must be {_alternatives(error.schema[error.validator])}, "
                                                         f"not {_shown(error.instance)}")]
        return [finding for sub in branch for finding in explain(sub)]
    how = _EXPLAINERS.get(str(error.validator))
    if how is None:
        return [Finding(tuple(error.absolute_path), error.message)]
    return how(error)


def _branch_meant(error: ValidationError) -> list[ValidationError] | None:
    """The errors of the alternative whose kind the value has (a mapping for quiet_hours: {...}), if any."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for index, subs in sorted(branches.items()):
        if not any(not sub.relative_path and _wrong_kind(sub) for sub in subs):
            return subs
    return None


def _wrong_kind(error: ValidationError) -> bool:
    """The value is not even of the kind this alternative takes (a mapping where a name is expected)."""
    if error.validator in ("type", "const"):
        return True
    if error.validator == "enum":
        return kind_of(error.instance) not in {kind_of(v) for v in error.validator_value}
    return False


def _alternatives(branches: list[dict[str, Any]]) -> str:
    words = []
    for branch in branches:
        if "const" in branch:
            words.append(_shown(branch["const"]))
        elif "title" in branch:
            words.append(branch["title"])
        elif "$ref" in branch:
            words.append(branch["$ref"].rsplit("/", 1)[-1].replace("_", " "))
        else:
            words.append(KINDS.get(branch.get("type", ""), "something else"))
    return " or ".join(words)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return KINDS[kind_of(value)]
    return repr(value) if isinstance(value, str) else str(value)


def _where(path: Iterable[str | int]) -> str:
    """``rules/3/quiet_hours`` -> ``quiet_hours``; the rule itself is named by the caller."""
    parts = [str(p) for p in path]
    if parts[:1] == ["rules"] and len(parts) >= 2:
        parts = parts[2:]
    return ".".join(parts)


def _owner(path: tuple[str | int, ...]) -> str:
    """What a stray key is not a field of: "a rule field", "a field of tiers.premium", "a top-level key"."""
    if not path:
        return "a top-level key of the rules file"
    if path[0] == "rules" and len(path) == 2:
        return "a rule field"
    return f"a field of {_where(path)}"


def _additional(error: ValidationError) -> list[Finding]:
    known = list(error.schema.get("properties", {}))
    path = tuple(error.absolute_path)
    found = []
    for key in error.instance:
        if key in known:
            continue
        meant = suggest(key, [k for k in known if k not in error.instance])
        hint = f"; did you mean '{meant}'?" if meant else f" (fields: {', '.join(known)})"
        found.append(Finding(path, f"'{key}' is not {_owner(path)}{hint}", key=str(key),
                             rename=(str(key), meant) if meant else None))
    return found


def _required(error: ValidationError) -> list[Finding]:
    name = error.message.split("'")[1] if "'" in error.message else error.message
    about = error.schema.get("properties", {}).get(name, {}).get("description")
    where = _where(error.absolute_path)
    return [Finding(tuple(error.absolute_path),
                    f"{where + ': ' if where else ''}'{name}' is missing" + (f" ({about})" if about else ""),
                    missing=name)]


def _enum(error: ValidationError) -> list[Finding]:
    allowed = error.validator_value
    meant = suggest(error.instance, allowed) if isinstance(error.instance, str) else None
    title = error.schema.get("title")
    what = f"is not {title}" if title else "is not one of " + ", ".join(_shown(v) for v in allowed)
    hint = f"; did you mean '{meant}'?" if meant else (f" ({', '.join(map(str, allowed))})" if title else "")
    return [_at(error, f"{_shown(error.instance)} {what}{hint}")]


def _const(error: ValidationError) -> list[Finding]:
    return [_at(error, f"must be {_shown(error.validator_value)}, not {_shown(error.instance)}")]


def _type(error: ValidationError) -> list[Finding]:
    wanted = error.validator_value
    wanted = [wanted] if isinstance(wanted, str) else wanted
    words = " or ".join(KINDS.get(w, w) for w in wanted)
    hint = f"; write [{error.instance}]" if "array" in wanted and isinstance(error.instance, str) else ""
    return [_at(error, f"must be {words}, not {_shown(error.instance)}{hint}")]


def _pattern(error: ValidationError) -> list[Finding]:
    title = error.schema.get("title", "in the expected form")
    about = error.schema.get("description")
    return [_at(error, f"{_shown(error.instance)} is not {title}" + (f": write {about}" if about else ""))]


def _bound(words: str):
    def explain_bound(error: ValidationError) -> list[Finding]:
        return [_at(error, words.format(limit=error.validator_value, value=_shown(error.instance)))]
    return explain_bound


def _at(error: ValidationError, message: str) -> Finding:
    where = _where(error.absolute_path)
    return Finding(tuple(error.absolute_path), f"{where}: {message}" if where else message)


_EXPLAINERS = {
    "additionalProperties": _additional,
    "required": _required,
    "enum": _enum,
    "const": _const,
    "type": _type,
    "pattern": _pattern,
    "minimum": _bound("{value} is below the least allowed, {limit}"),
    "maximum": _bound("{value} is above the most allowed, {limit}"),
    "minItems": _bound("needs at least {limit} item(s)"),
    "maxItems": _bound("takes at most {limit} item(s)"),
    "uniqueItems": _bound("names something twice"),
    "minLength": _bound("must not be empty"),
    "minProperties": _bound("needs at least {limit} entry"),
}
