"""Griffe extension: show the docstrings' reST bits as Markdown on the site (display only; the source is unchanged).

The docstrings are Google style with a little reST, which Markdown would mangle:

* ``.. math:: X`` (and its indented continuation lines) -> a ``$$ X $$`` block, rendered by MathJax (arithmatex);
* a bare doctest (``>>>`` lines and their output, outside an ``Examples:`` section) -> a fenced ``pycon`` block
  (Markdown would turn ``>>>`` into nested quotes and ``[0, 1]`` into a link);
* ``:math:`x``` -> ``$x$`` (a role wrapped over lines joined onto one); ``:func:`x```, ``:class:`x``` and the other roles -> ```x```; a paragraph ending in ``::`` -> ``:``.
"""

from __future__ import annotations

import re

from griffe import Extension

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc|const|ref):`(~?)([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_EXAMPLES = re.compile(r"^\s*Examples?:\s*$")


def _role(match: re.Match) -> str:
    short, target = match.groups()  # `~a.b.c` shows `c`, as Sphinx does
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST constructs rewritten as Markdown (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    examples_indent: int | None = None  # inside a Google "Examples:" section, griffe handles doctests itself
    while i < len(lines):
        line = lines[i]
        if line.strip() and examples_indent is not None and _indent(line) <= examples_indent:
            examples_indent = None
        if _EXAMPLES.match(line):
            examples_indent = _indent(line)
            out.append(line)
            i += 1
            continue
        math = _MATH.match(line)
        if math:
            pad, body = math.group(1), [math.group(2)] if math.group(2).strip() else []
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > len(pad):
                body.append(lines[i].strip())
                i += 1
            out += [pad + "$$", *(pad + b for b in body), pad + "$$"]
            continue
        if line.lstrip().startswith(">>>") and examples_indent is None:
            pad = line[: _indent(line)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(pad):] if lines[i].startswith(pad) else lines[i].strip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [pad + "```pycon", *(pad + b for b in block), pad + "```"]
            continue
        while ":math:`" in _MATH_ROLE.sub("", line) and i + 1 < len(lines) and lines[i + 1].strip():
            # a role wrapped onto the next line (a docs reader found four shown raw): one line, as the math needs
            i += 1
            line = line.rstrip() + " " + lines[i].strip()
        line = _ROLE.sub(_role, _MATH_ROLE.sub(r"$\1$", line))
        if line.endswith("::") and not line.strip() == "::":
            line = line[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
