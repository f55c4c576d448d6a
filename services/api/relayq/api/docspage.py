"""An HTML page rendering an OpenAPI document, for GET /docs.

Self-contained (inline CSS, no scripts, no external files): it must work where
the cluster has no way out to a CDN.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

METHOD_ORDER = ("get", "post", "put", "patch", "delete")
PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
 background:#f6f7f9;line-height:1.45}
main{max-width:70rem;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{margin:.2rem 0}h2{margin-top:2.5rem;border-bottom:2px solid #d5d9e0;padding-bottom:.3rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
.op{background:#fff;border:1px solid #d5d9e0;border-radius:6px;margin:1rem 0;padding:.8rem 1rem}
.op h3{margin:0 0 .4rem;font-size:1.05rem;display:flex;gap:.6rem;align-items:center}
.method{font:bold .8rem ui-monospace,monospace;text-transform:uppercase;color:#fff;
 padding:.15rem .5rem;border-radius:4px;background:#56607a}
.get{background:#2f6fb3}.post{background:#2e8b57}.delete{background:#b33a3a}
.auth{color:#56607a;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0 .8rem;font-size:.92rem}
th,td{text-align:left;border-bottom:1px solid #e4e7ec;padding:.3rem .5rem;vertical-align:top}
th{background:#eef0f4;font-weight:600}
h4{margin:.8rem 0 .2rem;font-size:.95rem}
.schema h3{font-family:ui-monospace,monospace}
a{color:#2f6fb3}
"""


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page rendering `document` (no scripts, no external files)."""
    info = document.get("info", {})
    title = str(info.get("title", "API"))
    components = document.get("components", {})
    schemes = components.get("securitySchemes", {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{PAGE_STYLE}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Version <code>{_e(info.get('version', ''))}</code> &middot; OpenAPI "
        f"<code>{_e(document.get('openapi', ''))}</code> &middot; "
        '<a href="/openapi.json">openapi.json</a></p>',
        f"<p>{_md(info.get('description', ''))}</p>",
        "<h2>Authentication</h2>",
        _table(
            ["scheme", "how", "meaning"],
            [
                [f"<code>{_e(name)}</code>", _scheme_how(s), _md(s.get("description", ""))]
                for name, s in schemes.items()
            ],
        ),
    ]
    for tag, operations in _by_tag(document):
        parts.append(f"<h2>{_e(tag)}</h2>")
        parts.extend(
            _render_operation(document, path, method, op) for path, method, op in operations
        )
    schemas = components.get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        parts.extend(_render_schema(document, name, s) for name, s in schemas.items())
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _md(value: object) -> str:
    """Escaped text with `code spans` rendered."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(value))


def _scheme_how(scheme: Mapping[str, Any]) -> str:
    if scheme.get("type") == "http":
        return f"<code>Authorization: {_e(str(scheme.get('scheme', '')).title())} …</code>"
    if scheme.get("type") == "apiKey":
        return f"<code>{_e(scheme.get('name', ''))}: …</code> ({_e(scheme.get('in', ''))})"
    return _e(scheme.get("type", ""))


def _by_tag(document: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str, Any]]]]:
    groups: dict[str, list[tuple[str, str, Any]]] = {
        str(t["name"]): [] for t in document.get("tags", [])
    }
    for path, item in document.get("paths", {}).items():
        for method in METHOD_ORDER:
            if method in item:
                op = item[method]
                tag = str((op.get("tags") or ["other"])[0])
                groups.setdefault(tag, []).append((path, method, op))
    return [(tag, ops) for tag, ops in groups.items() if ops]


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow local `$ref`s (`#/components/...`) until a concrete node."""
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node and seen < 20:
        target: Any = document
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        node, seen = target, seen + 1
    return node


def _describe(document: Mapping[str, Any], schema: Any) -> str:
    """One line of HTML: a link to a named schema, or type, format, enum and bounds."""
    if not isinstance(schema, Mapping):
        return "any"
    if "$ref" in schema:
        name = _e(str(schema["$ref"]).rsplit("/", 1)[-1])
        return f'<a href="#schema-{name}"><code>{name}</code></a>'
    if "allOf" in schema:
        return " with ".join(_describe(document, part) for part in schema["allOf"])
    if "type" not in schema and "properties" in schema:
        return ", ".join(
            f"<code>{_e(name)}</code> {_describe(document, sub)}"
            for name, sub in schema["properties"].items()
        )
    kind = schema.get("type")
    if kind == "array":
        text = f"array of {_describe(document, schema.get('items'))}"
    elif kind is None:
        text = "" if "const" in schema or "enum" in schema else "any"
    else:
        text = _e(" or ".join(kind) if isinstance(kind, list) else kind)
    if "format" in schema:
        text += f" ({_e(schema['format'])})"
    facts = [text] if text else []
    if "const" in schema:
        facts.append(f"always <code>{_e(json.dumps(schema['const']))}</code>")
    if "enum" in schema and len(schema["enum"]) == 1:
        facts.append(f"always <code>{_e(schema['enum'][0])}</code>")
    elif "enum" in schema:
        facts.append("one of " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"]))
    for low, high, unit in (
        ("minimum", "maximum", ""),
        ("minLength", "maxLength", " characters"),
        ("minItems", "maxItems", " items"),
    ):
        if low in schema and high in schema:
            facts.append(f"{_e(schema[low])}..{_e(schema[high])}{unit}")
        elif low in schema:
            facts.append(f"at least {_e(schema[low])}{unit}")
        elif high in schema:
            facts.append(f"at most {_e(schema[high])}{unit}")
    if "pattern" in schema:
        facts.append(f"pattern <code>{_e(schema['pattern'])}</code>")
    if "default" in schema:
        facts.append(f"default <code>{_e(json.dumps(schema['default']))}</code>")
    return "; ".join(facts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _fields(document: Mapping[str, Any], schema: Any) -> str:
    """A table of an object schema's fields; a one-line description for anything else."""
    s = _resolve(document, schema)
    if not isinstance(s, Mapping) or "properties" not in s:
        return f"<p>{_describe(document, schema)}</p>"
    required = set(s.get("required", []))
    rows = [
        [
            f"<code>{_e(name)}</code>",
            _describe(document, sub),
            "yes" if name in required else "no",
            _md(sub.get("description", "")),
        ]
        for name, sub in s["properties"].items()
    ]
    note = "No other fields." if s.get("additionalProperties") is False else ""
    return _table(["field", "type", "required", "meaning"], rows) + (
        f"<p>{note}</p>" if note else ""
    )


def _render_operation(document: Mapping[str, Any], path: str, method: str, op: Any) -> str:
    security = op.get("security") or []
    auth = " or ".join(f"<code>{_e(name)}</code>" for req in security for name in req)
    out = [
        f'<section class="op" id="{_e(op.get("operationId", ""))}">',
        f'<h3><span class="method {_e(method)}">{_e(method)}</span><code>{_e(path)}</code>'
        f"<span>{_e(op.get('summary', ''))}</span></h3>",
        f'<div class="auth">auth: {auth or "none"}</div>',
    ]
    if op.get("description"):
        out.append(f"<p>{_md(op['description'])}</p>")
    params = [_resolve(document, p) for p in op.get("parameters", [])]
    if params:
        out.append("<h4>Parameters</h4>")
        rows = [
            [
                f"<code>{_e(p.get('name', ''))}</code>",
                _e(p.get("in", "")),
                _describe(document, p.get("schema", {})),
                "yes" if p.get("required") else "no",
                _md(p.get("description", "")),
            ]
            for p in params
        ]
        out.append(_table(["name", "in", "type", "required", "meaning"], rows))
    body = _resolve(document, op.get("requestBody"))
    if isinstance(body, Mapping) and body.get("content"):
        for media_type, content in body["content"].items():
            out.append(f"<h4>Request body <code>{_e(media_type)}</code></h4>")
            out.append(_fields(document, content.get("schema", {})))
    out.append("<h4>Responses</h4>")
    rows = []
    for status, response in op.get("responses", {}).items():
        r = _resolve(document, response)
        content = r.get("content", {})
        media = "<br>".join(f"<code>{_e(m)}</code>" for m in content)
        shapes = "<br>".join(_describe(document, c.get("schema", {})) for c in content.values())
        headers = ", ".join(f"<code>{_e(h)}</code>" for h in r.get("headers", {}))
        rows.append([f"<b>{_e(status)}</b>", _md(r.get("description", "")), media, shapes, headers])
    out.append(_table(["status", "meaning", "content type", "body", "headers"], rows))
    out.append("</section>")
    return "\n".join(out)


def _render_schema(document: Mapping[str, Any], name: str, schema: Any) -> str:
    out = [f'<section class="op schema" id="schema-{_e(name)}"><h3>{_e(name)}</h3>']
    if isinstance(schema, Mapping) and schema.get("description"):
        out.append(f"<p>{_md(schema['description'])}</p>")
    out.append(_fields(document, schema))
    out.append("</section>")
    return "\n".join(out)
