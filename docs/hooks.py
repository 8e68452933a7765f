"""MkDocs hook: pages built from the repository's files, so the site never copies a number or a config by hand.

* ``benchmarks/results/`` (tables and figures) is published as it is: every ``benchmarks/results/**/*.md`` becomes
  a page and every ``*.png`` an image at the same path under the site; the marker ``<!-- benchmark-results -->``
  in a page is replaced by a list of links to all result pages, titled by their first heading. A result added or
  re-run appears on the next build.
* ``<!-- configs -->`` is replaced by one section per ``configs/*.yaml``: its leading comment (up to the first
  command line), how to run it, then the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

MARKER = "<!-- benchmark-results -->"
CONFIGS_MARKER = "<!-- configs -->"
RESULTS = "benchmarks/results"


def _repo(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _results_dir(config) -> Path:
    return _repo(config) / RESULTS


def on_files(files: Files, config) -> Files:
    root = _results_dir(config)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in {".md", ".png"}:
            uri = f"{RESULTS}/{path.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path), inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#\s+(.+)", line)
        if match:
            return match.group(1).strip()
    return path.stem


def _configs(config) -> str:
    sections = []
    for path in sorted((_repo(config) / "configs").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        comment = []
        for line in text.splitlines():
            if not line.startswith("#") or "lit-robust " in line:  # the prose, up to the first command line
                break
            comment.append(line.lstrip("#").strip())
        yaml = "\n".join("    " + line if line else "" for line in text.rstrip().splitlines())
        name = f"configs/{path.name}"
        sections.append(f"### `{name}`\n\n{' '.join(' '.join(comment).split())}\n\n"
                        f"`lit-robust fit --config {name}`, then `lit-robust test --config {name} --ckpt_path last`.\n\n"
                        f'??? note "{name}"\n\n    ```yaml\n{yaml}\n    ```\n')
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    if CONFIGS_MARKER in markdown:
        markdown = markdown.replace(CONFIGS_MARKER, _configs(config))
    if MARKER not in markdown:
        return markdown
    root = _results_dir(config)
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth
    items = [f"- [{_title(p)}]({prefix}{RESULTS}/{p.relative_to(root).as_posix()}) "
             f"(`{p.relative_to(root).as_posix()}`)" for p in sorted(root.rglob("*.md"))]
    return markdown.replace(MARKER, "\n".join(items))
