"""What a kind's JSON Schema tells the engine ahead of time, so the per-message path does less.

- `possible(schema, pointer)`: can a valid message have a value at this pointer at all? Rule
  pointers that cannot exist for a kind are dropped at load instead of looked up per message.
- `scan_plan(schema)`: where can a *valid* message hold a free string (a string not fixed by
  `enum`/`const`)? Detectors walk only there. Counters, booleans, enums and constants cannot carry
  an e-mail or a host name, so e.g. a server payload's `metrics` subtree is never walked.

A plan is None (nothing to scan), True (scan everything below), or a dict of key -> plan, where
"*" stands for array items and for object keys not named in `properties`. Only local `$ref`s are
followed; anything the analysis does not understand is scanned (the safe answer).
"""

from __future__ import annotations

from typing import Any

Plan = None | bool | dict


def union(a: Plan, b: Plan) -> Plan:
    if a is None:
        return b
    if b is None:
        return a
    if a is True or b is True:
        return True
    out = dict(a)
    for k, v in b.items():
        out[k] = union(out.get(k), v)
    return out


def _resolve(schema: Any, root: dict) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref is None:
        return schema
    if not ref.startswith("#/"):
        return True  # not followed: treat as "anything"
    node: Any = root
    for tok in ref[2:].split("/"):
        node = node.get(tok.replace("~1", "/").replace("~0", "~"), True) if isinstance(node, dict) else True
    return node


def _types(schema: dict) -> set[str] | None:
    t = schema.get("type")
    return None if t is None else ({t} if isinstance(t, str) else set(t))


def _branches(schema: dict) -> list:
    out = [s for kw in ("anyOf", "oneOf", "allOf") for s in schema.get(kw, [])]
    out += [schema[kw] for kw in ("then", "else") if kw in schema]
    if "$ref" in schema:
        out.append({"$ref": schema["$ref"]})
    return out


def scan_plan(schema: Any, root: dict | None = None, depth: int = 0, closed_parent: bool = False) -> Plan:
    """`closed_parent`: the object this (sub)schema applies to alongside is closed by its parent
    (`additionalProperties: false`), so a branch that says nothing about extra keys opens nothing."""
    root = root if root is not None else schema
    if depth > 64 or schema is True or schema == {}:
        return True
    if schema is False or not isinstance(schema, dict):
        return None if schema is False else True
    if "$ref" in schema and len(schema) == 1:
        return scan_plan(_resolve(schema, root), root, depth + 1)
    if "enum" in schema or "const" in schema:
        return None
    plan: Plan = None
    closed = closed_parent or schema.get("additionalProperties") is False
    for sub in _branches(schema):
        plan = union(plan, scan_plan(_resolve(sub, root), root, depth + 1, closed))
    types = _types(schema)
    structural = "properties" in schema or "items" in schema or "additionalProperties" in schema
    if types is None and not structural and not _branches(schema):
        return True  # unconstrained
    if types is not None and "string" in types:
        return True
    if (types is None and structural) or (types and "object" in types):
        obj: dict = {}
        for key, sub in schema.get("properties", {}).items():
            p = scan_plan(_resolve(sub, root), root, depth + 1)
            if p is not None:
                obj[key] = p
        extra = schema.get("additionalProperties", False if closed_parent else True)
        if extra is not False:
            p = scan_plan(_resolve(extra, root), root, depth + 1)
            if p is not None:
                obj["*"] = p
        plan = union(plan, obj or None)
    if (types is None and "items" in schema) or (types and "array" in types):
        p = scan_plan(_resolve(schema.get("items", True), root), root, depth + 1)
        if p is not None:
            plan = union(plan, {"*": p})
    return plan


def possible(schema: Any, pointer: tuple[str, ...], root: dict | None = None, depth: int = 0,
             closed_parent: bool = False) -> bool:
    """Could a message valid under `schema` have a value at `pointer` (`*` = any key/index)?"""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if not pointer or schema is True or depth > 64:
        return schema is not False
    if not isinstance(schema, dict):
        return schema is not False
    closed = closed_parent or schema.get("additionalProperties") is False
    if any(possible(sub, pointer, root, depth + 1, closed) for sub in _branches(schema)):
        return True
    types = _types(schema)
    tok, rest = pointer[0], pointer[1:]
    if types is None or "object" in types:
        props = schema.get("properties", {})
        if tok == "*":
            if any(possible(s, rest, root, depth + 1) for s in props.values()):
                return True
        elif tok in props:
            return possible(props[tok], rest, root, depth + 1)
        extra = schema.get("additionalProperties", False if closed_parent else True)
        if extra is not False and possible(extra, rest, root, depth + 1):
            return True
    if types is None or "array" in types:
        if (tok == "*" or tok.isdigit()) and possible(schema.get("items", True), rest, root, depth + 1):
            return True
    return False


def known_names(schema: Any) -> set[str]:
    """Every object key a kind's schema names: `properties`, `required`, `dependentRequired`,
    `dependentSchemas`, `propertyNames` `enum`/`const`, anywhere in the schema (`$defs`, branches).

    Each of these was written by the pack's author, so a pointer made of them is the pack's
    vocabulary, not the sender's. Keys the schema admits without naming them (`additionalProperties`,
    `patternProperties`) are the sender's choice and are not here.
    """
    names: set[str] = set()
    stack = [schema]
    seen = 0
    while stack and seen < 100_000:
        node = stack.pop()
        seen += 1
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for kw in ("properties", "dependentRequired", "dependentSchemas"):
            sub = node.get(kw)
            if isinstance(sub, dict):
                names.update(k for k in sub if isinstance(k, str))
                if kw == "dependentRequired":
                    names.update(k for v in sub.values() if isinstance(v, list) for k in v if isinstance(k, str))
        req = node.get("required")
        if isinstance(req, list):
            names.update(k for k in req if isinstance(k, str))
        pn = node.get("propertyNames")
        if isinstance(pn, dict):
            names.update(k for k in pn.get("enum", []) if isinstance(k, str))
            if isinstance(pn.get("const"), str):
                names.add(pn["const"])
        for key, sub in node.items():
            if key in ("enum", "const", "examples", "default", "description", "title", "$comment"):
                continue  # values, not schemas
            if key in ("properties", "dependentSchemas", "$defs", "definitions", "patternProperties"):
                if isinstance(sub, dict):
                    stack.extend(sub.values())
            elif isinstance(sub, (dict, list)):
                stack.append(sub)
    return names
