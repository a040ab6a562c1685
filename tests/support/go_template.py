"""A small interpreter of Go's text/template, enough for Ollama chat templates, to check them against Jinja.

It follows Go's rules for what it supports: ``{{- `` / `` -}}`` trim the whitespace beside an action; ``range``
over ``.Messages`` (with ``$i, $_ :=``); ``if``/``else``/``end``; ``eq``, ``ne``, ``and``, ``not``; fields of the
dot (``.Role``, ``.Content``) and of the root (``$.System``); string and integer literals. Anything else raises,
so a template that uses more than this fails loudly instead of rendering wrong.
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens, i=0, stop=("end",)):
    """→ (nodes, index of the stopping action, its text)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split()[0] if value else ""
        if word in stop:
            return nodes, i, value
        if word == "range":
            body, i, _ = _parse(tokens, i + 1)
            nodes.append(("range", value[len("range") :].strip(), body))
        elif word == "if":
            body, i, end = _parse(tokens, i + 1, ("end", "else"))
            other = []
            if end.startswith("else"):
                other, i, _ = _parse(tokens, i + 1)
            nodes.append(("if", value[2:].strip(), body, other))
        else:
            nodes.append(("print", value))
        i += 1
    return nodes, i, ""


def _split_args(expr: str) -> list[str]:
    args, depth, current, quoted = [], 0, "", False
    for ch in expr:
        if ch == '"' and depth == 0:
            quoted = not quoted
        if ch == "(" and not quoted:
            depth += 1
        if ch == ")" and not quoted:
            depth -= 1
        if ch == " " and depth == 0 and not quoted:
            if current:
                args.append(current)
            current = ""
            continue
        current += ch
    if current:
        args.append(current)
    return args


def _eval(expr: str, dot, env):
    expr = expr.strip()
    if expr.startswith("(") and expr.endswith(")"):
        return _eval(expr[1:-1], dot, env)
    parts = _split_args(expr)
    if len(parts) > 1:
        fn, args = parts[0], [_eval(a, dot, env) for a in parts[1:]]
        if fn == "eq":
            return args[0] == args[1]
        if fn == "ne":
            return args[0] != args[1]
        if fn == "and":
            return all(args)
        if fn == "not":
            return not args[0]
        raise ValueError(f"unsupported function {fn!r}")
    if expr.startswith('"'):
        return expr[1:-1].encode().decode("unicode_escape")
    if expr.isdigit():
        return int(expr)
    if expr.startswith("$."):
        return env["$"][expr[2:]]
    if expr.startswith("$"):
        return env[expr]
    if expr.startswith("."):
        return dot[expr[1:]]
    raise ValueError(f"unsupported expression {expr!r}")


def _run(nodes, dot, env) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "print":
            out.append(str(_eval(node[1], dot, env)))
        elif node[0] == "if":
            out.append(_run(node[2] if _eval(node[1], dot, env) else node[3], dot, env))
        else:
            spec = node[1]
            names: list[str] = []
            if ":=" in spec:
                left, spec = spec.split(":=")
                names = [n.strip() for n in left.split(",")]
            for i, item in enumerate(_eval(spec, dot, env)):
                inner = dict(env)
                if len(names) == 2:
                    inner[names[0]], inner[names[1]] = i, item
                elif names:
                    inner[names[0]] = item
                out.append(_run(node[2], item, inner))
    return "".join(out)


def render(template: str, data: dict) -> str:
    nodes, _, _ = _parse(_tokens(template))
    return _run(nodes, data, {"$": data})
