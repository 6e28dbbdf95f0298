"""mkdocs hooks: the README and the benchmark pages live outside docs/ (a code host shows them
where they are), so the site builds them as pages of its own and points the links to them there.
Without this, every link from docs/ to ../README.md or ../benchmarks/RESULTS.md is dead in the site."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent
DOCS = ROOT / "docs"
# a page outside docs/ -> its name in the site
OUTSIDE = {
    ROOT / "README.md": "readme.md",
    ROOT / "benchmarks" / "RESULTS.md": "results.md",
    ROOT / "benchmarks" / "README.md": "benchmarks.md",
}
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def _relink(markdown: str, folder: Path) -> str:
    """Links relative to ``folder`` made relative to docs/: to a page of docs/, to a page above,
    or (anything else in the repository) left as they are."""

    def replace(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            return match.group(0)
        path = (folder / target).resolve()
        if path in OUTSIDE:
            target = OUTSIDE[path]
        elif path.is_relative_to(DOCS):
            target = path.relative_to(DOCS).as_posix()
        return f"{match.group(1)}{target}{match.group(3) or ''}{match.group(4)}"

    return _LINK.sub(replace, markdown)


def on_files(files, config):
    for source, name in OUTSIDE.items():
        content = _relink(source.read_text("utf-8"), source.parent)
        files.append(File.generated(config, name, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri in OUTSIDE.values():
        return markdown  # relinked already
    return _relink(markdown, DOCS / Path(page.file.src_uri).parent)
