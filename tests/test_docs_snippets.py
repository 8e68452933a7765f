"""Every page's Python snippets can be run as written, in order: checked statically, in a few seconds.

A newcomer ran each page's code blocks top to bottom and hit names no block defines (a datamodule never imported,
`dm` of another snippet, `my_net` of the reader's imagination) and a page that borrowed Getting started's 8×8-digits
classifier for MNIST. This test reads each page as the site shows it (the README sections and example files that
``pymdownx.snippets`` includes, resolved here the same way), takes its ```python blocks in order, compiles each, and
checks with :mod:`symtable` that every name a block reads is bound by that block or an earlier one of the same page,
or is a builtin, or is in the page's allow-list below. A block that only includes a whole file (an example script
in a collapsed box) is checked on its own: it must stand alone. Nothing is executed: no network, no training.

The only allow-list: the pages that say in words that they continue from Getting started (its ``MyClassifier`` for
8×8 digits, its ``train_loader`` …) may read the names Getting started's blocks define, and only those the page's
prose names in backticks. A page on other data (MNIST, two moons, regression targets) must bring its own model.
"""

from __future__ import annotations

import builtins
import re
import symtable
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"
BUILTINS = set(dir(builtins)) | {"__file__", "__name__", "__doc__"}  # what a script's module scope starts with

# pages that continue from Getting started, as their text says; they may use the names it defines (see _allowed)
CONTINUES_GETTING_STARTED = {
    "docs/capabilities/itlm.md",
    "docs/capabilities/batch-filters.md",
    "docs/capabilities/corruption-rate.md",
    "docs/capabilities/precision-compile.md",
}

INCLUDE = re.compile(r'^(?P<indent>[ \t]*)--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"[ \t]*$', re.M)
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def _section(path: str, name: str) -> str:
    text = (REPO / path).read_text(encoding="utf-8")
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    assert start in text and end in text, f"{path} has no snippet section {name!r}"
    return text.split(start, 1)[1].split(end, 1)[0]


def expand_sections(markdown: str) -> str:
    """Replace ``--8<-- "FILE:SECTION"`` lines by that section (as the site does); whole-file includes stay."""

    def repl(m: re.Match) -> str:
        if m["section"] is None:
            return m[0]
        return textwrap.indent(_section(m["path"], m["section"]), m["indent"])

    return INCLUDE.sub(repl, markdown)


def python_blocks(markdown: str) -> list[tuple[str, str | None]]:
    """The page's ```python blocks in order, as ``(source, included_file)``; ``included_file`` is set for a block
    that is one whole-file include (an example script), whose source is then that file."""
    blocks = []
    for m in FENCE.finditer(markdown):
        if m["lang"] != "python":
            continue
        body = textwrap.dedent(m["body"])
        include = INCLUDE.fullmatch(body.strip())
        if include and include["section"] is None:
            blocks.append(((REPO / include["path"]).read_text(encoding="utf-8"), include["path"]))
        else:
            blocks.append((body, None))
    return blocks


def prose(markdown: str) -> str:
    return FENCE.sub("", markdown)


def _reads_and_binds(source: str, filename: str) -> tuple[set[str], set[str]]:
    """Names one top-level statement reads from the module scope, and the names it binds there."""
    top = symtable.symtable(source, filename, "exec")
    binds = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = {s.get_name() for s in top.get_symbols() if s.is_referenced() and s.get_name() not in binds}
    stack = list(top.get_children())
    while stack:  # functions, classes, comprehensions: their unbound names are looked up in the module
        table = stack.pop()
        stack.extend(table.get_children())
        reads |= {s.get_name() for s in table.get_symbols()
                  if s.is_referenced() and s.is_global() and not s.is_assigned() and s.get_name() not in binds}
    return reads, binds


def undefined_names(source: str, filename: str, known: set[str]) -> tuple[list[str], set[str]]:
    """Compile ``source``; return the names it reads before any block binds them, and ``known`` plus its bindings.

    Statements are taken in order, so a name used above its own definition in the same block is caught too.
    """
    import ast

    compile(source, filename, "exec")  # a SyntaxError names the page and the block
    known = set(known)
    missing = []
    for stmt in ast.parse(source).body:
        reads, binds = _reads_and_binds(ast.unparse(stmt), filename)
        missing += sorted(n for n in reads - known - BUILTINS if n not in missing)
        known |= binds
    return missing, known


def _pages() -> list[str]:
    return ["README.md"] + sorted(p.relative_to(REPO).as_posix() for p in DOCS.rglob("*.md"))


def _page_markdown(page: str) -> str:
    return expand_sections((REPO / page).read_text(encoding="utf-8"))


def _getting_started_names() -> set[str]:
    known: set[str] = set()
    for i, (source, included) in enumerate(python_blocks(_page_markdown("docs/getting-started.md"))):
        if included is None:
            known = undefined_names(source, f"getting-started.md[{i}]", known)[1]
    return known


def _allowed(page: str, markdown: str) -> set[str]:
    """Getting started's names that a page continuing from it names in backticks in its prose."""
    if page not in CONTINUES_GETTING_STARTED:
        return set()
    text = prose(markdown)
    assert "getting-started.md" in text, f"{page} should say (and link) that it continues from Getting started"
    return {name for name in _getting_started_names() if f"`{name}`" in text}


def check_page(page: str, markdown: str) -> list[str]:
    """Problems of one page's snippets, as readable lines (empty: every block runs as written, in order)."""
    problems = []
    known = _allowed(page, markdown)
    for i, (source, included) in enumerate(python_blocks(markdown)):
        where = f"{page}, python block {i + 1}" + (f" ({included})" if included else "")
        try:
            if included:  # a whole example script: it must stand alone, and adds nothing to the page
                missing, _ = undefined_names(source, where, set())
            else:
                missing, known = undefined_names(source, where, known)
        except SyntaxError as err:
            problems.append(f"{where}: does not compile: {err}")
            continue
        if missing:
            problems.append(f"{where}: reads {', '.join(missing)}, which no earlier block of the page defines")
    return problems


def test_the_pages_have_snippets():
    pages = _pages()
    assert "docs/capabilities/backdoor.md" in pages and "README.md" in pages
    counted = {page: len(python_blocks(_page_markdown(page))) for page in pages}
    assert sum(counted.values()) >= 30, counted
    assert counted["docs/capabilities/itlm.md"] >= 2  # the README's ITLM section, included, and the example
    assert {"MyClassifier", "train_loader", "test_loader", "pl", "torch"} <= _getting_started_names()


@pytest.mark.parametrize("page", _pages())
def test_every_name_a_snippet_reads_is_defined_above(page):
    problems = check_page(page, _page_markdown(page))
    assert not problems, "\n".join(problems)


# roots of `name.attr` in a page's prose that are not snippet variables: modules, `self`, a layer name, a file name
PROSE_ROOTS = {"self", "lit_robust", "torch", "nn", "sys", "mkdocs", "mymodel", "encoder", "lightning"}
FILE_SUFFIX = re.compile(r"\.(png|csv|py|yaml|md|json|ckpt|parquet|txt|sh)\b")


def prose_variables_unbound(markdown: str, known: set[str]) -> list[str]:
    """Inline code such as `ac.flagged` in the prose of a page with snippets, whose root no snippet binds."""
    out = []
    for code in re.findall(r"`([^`\n]+)`", prose(markdown)):
        m = re.match(r"([a-z_][a-z0-9_]*)\.[A-Za-z_]", code)
        if m and m[1] not in known | PROSE_ROOTS and not FILE_SUFFIX.search(code) and code not in out:
            out.append(code)
    return out


@pytest.mark.parametrize("page", _pages())
def test_the_prose_names_variables_the_snippets_bind(page):
    markdown = _page_markdown(page)
    blocks = [source for source, included in python_blocks(markdown) if included is None]
    if not blocks:
        return  # pages without snippets (the CLI, the API) speak of `trainer.callbacks` as config keys
    known = _allowed(page, markdown)
    for source in blocks:
        known |= undefined_names(source, page, known)[1]
    unbound = prose_variables_unbound(markdown, known)
    assert not unbound, f"{page}: the prose reads {unbound}, which no snippet of the page binds"


def test_the_check_catches_what_a_newcomer_hit():
    """The checker itself, on the kinds of page the newcomer ran (an undefined datamodule, another snippet's
    variable, a borrowed model on a page that does not continue from Getting started)."""
    page = "docs/capabilities/example.md"
    markdown = textwrap.dedent('''
        ```python
        import pytorch_lightning as pl
        from lit_robust import BatchFilter
        trainer = pl.Trainer(callbacks=[BatchFilter("prl", drop_ratio=0.3)])
        trainer.fit(MyClassifier(), DigitsDataModule())
        ```

        ```python
        class Net:
            def forward(self, x):
                return helper(x) + [y for y in x if y in seen]
        pl.Trainer().fit(model, dm)
        ```

        ```python
        def broken(:
        ```
        ''')
    problems = check_page(page, markdown)
    assert len(problems) == 3, problems
    assert "block 1: reads DigitsDataModule, MyClassifier" in problems[0]
    assert "block 2: reads helper, seen, dm, model," in problems[1]  # in the order the statements read them
    assert "block 3: does not compile" in problems[2]
    assert prose_variables_unbound("`ac.flagged` holds the indices; see `itlm_scores.png`", set()) == ["ac.flagged"]
    fixed = markdown.replace("from lit_robust import BatchFilter", "from lit_robust import BatchFilter, "
                             "DigitsDataModule, ImageClassifier as MyClassifier")
    assert "block 1" not in "\n".join(check_page(page, fixed))


def test_readme_sections_resolve_as_on_the_site():
    markdown = _page_markdown("docs/capabilities/itlm.md")
    assert "from lit_robust import ITLM" in markdown and "--8<-- \"README.md:itlm\"" not in markdown
    assert Path(REPO / "examples" / "itlm_noisy_labels.py").read_text(encoding="utf-8") in [
        source for source, included in python_blocks(markdown) if included]
