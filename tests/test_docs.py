"""The docs cannot drift from the code: the Python API page's examples run, every relative link
in the README and docs/ leads to a file (and heading), every test the promises page names exists,
and the site builds with ``mkdocs build --strict`` when mkdocs is installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# A small text for the API page's examples: every letter, quotes, brackets, line ends.
TEXT = "".join(
    f"The quick brown fox jumps over the lazy dog {i}. He said \"yes\" (twice), and then he left.\n"
    f"Pack my box with five dozen liquor jugs; [{i % 7}] was the answer.\n\n"
    for i in range(120)
)


def _fences(markdown: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of each fenced code block."""
    blocks, lines, i = [], markdown.split("\n"), 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(.*)$", lines[i])
        if opening:
            fence, info, start = opening.group(1), opening.group(2).strip(), i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith(fence):
                i += 1
            blocks.append((start, info, "\n".join(lines[start:i])))
        i += 1
    return blocks


def _prose(markdown: str, inline_code: bool = False) -> str:
    """The text outside code blocks (and inline code, unless kept): where links are links."""
    kept, fenced = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line if inline_code else re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def _slug(heading: str) -> str:
    """The anchor a code host (and mkdocs' default toc) gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r" +", "-", text.strip())


def _generated_anchors(page: Path) -> set[str]:
    """The headings the site's build writes into a generated page: one per command in the Commands
    reference (mkdocs-click), one per documented object in the API reference (mkdocstrings)."""
    if page.name == "commands.md":
        from charlstm.cli import cli

        def paths(command, path):
            yield path
            for name, sub in getattr(command, "commands", {}).items():
                yield from paths(sub, f"{path} {name}")

        return {_slug(path) for path in paths(cli, "charlstm")}
    if page.name == "api-reference.md":
        return set(re.findall(r"^::: ([\w.]+)", page.read_text("utf-8"), re.M))
    return set()


def _anchors(page: Path) -> set[str]:
    headings = re.finditer(r"^#{1,6} (.+)$", _prose(page.read_text("utf-8"), inline_code=True), re.M)
    return {_slug(m.group(1)) for m in headings} | _generated_anchors(page)


def test_python_api_page_runs(tmp_path, monkeypatch):
    page = DOCS / "python-api.md"
    blocks = [(line, body) for line, info, body in _fences(page.read_text("utf-8")) if info == "python"]
    assert len(blocks) >= 8, "the page's examples were not found"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_text.txt").write_text(TEXT, encoding="utf-8")
    namespace: dict = {"__name__": "__docs__"}
    for line, body in blocks:  # one namespace, top to bottom, as a reader runs them
        exec(compile(body, f"docs/python-api.md, block at line {line}", "exec"), namespace)
    assert (tmp_path / "checkpoints" / "my_text" / "best.pt").is_file()


def _links(page: Path) -> list[str]:
    prose = _prose(page.read_text("utf-8"))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with this anchor in {file.relative_to(ROOT)}")
    assert broken == []


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title), [gone](missing.md), `[code](not-a-link.md)`\n")
    assert _links(page) == ["#title", "missing.md"]
    assert _anchors(page) == {"title"}
    assert _slug("Settings you keep (every command)") == "settings-you-keep-every-command"
    assert "charlstm-experiment-long-range" in _anchors(DOCS / "commands.md")
    assert "charlstm.api.Model" in _anchors(DOCS / "api-reference.md")


def test_every_test_the_promises_page_names_exists():
    named, missing = 0, []
    for row in (DOCS / "promises.md").read_text("utf-8").split("\n"):
        if not row.startswith("| ") or row.startswith("| promise"):
            continue
        checked_by = row.rstrip(" |").rsplit(" | ", 1)[-1]
        file = None
        for ref in re.findall(r"`([^`]+)`", checked_by):
            found = re.fullmatch(r"(?:tests/)?(test_\w+\.py)?(?:::(\w+))?(?: .*)?", ref)
            if not found or not (found.group(1) or found.group(2)):
                continue
            file = found.group(1) or file
            source = ROOT / "tests" / file
            if not source.is_file():
                missing.append(file)
            elif found.group(2) and not re.search(rf"^\s*def {found.group(2)}\(", source.read_text("utf-8"), re.M):
                missing.append(f"{file}::{found.group(2)}")
            named += 1
    assert named > 50 and missing == []


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    for part in ('-c constraints.txt -e ".[test]"', "python3 -m pytest -q"):
        assert part in readme and part in ci


def test_the_readme_is_short():
    words = len((ROOT / "README.md").read_text("utf-8").split())
    assert words <= 1200, f"README.md has {words} words; move detail into docs/"


def test_every_page_is_in_the_site():
    config = (ROOT / "mkdocs.yml").read_text("utf-8")
    assert [p.name for p in DOCS.glob("*.md") if p.name not in config] == []


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "site" / "python-api" / "index.html").is_file()
    commands = (tmp_path / "site" / "commands" / "index.html").read_text("utf-8")
    assert 'id="charlstm-train"' in commands and "--max-time" in commands  # generated by mkdocs-click
    api = (tmp_path / "site" / "api-reference" / "index.html").read_text("utf-8")
    assert 'id="charlstm.api.Model.generate"' in api  # generated by mkdocstrings


def test_one_version_everywhere():
    """``charlstm --version``, ``charlstm.__version__`` and the installed package's metadata all
    read charlstm/_version.py; the changelog's newest section is that version."""
    import importlib.metadata

    import charlstm
    from charlstm._version import __version__

    run = subprocess.run([sys.executable, "-m", "charlstm", "--version"], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"charlstm, version {__version__}"
    assert charlstm.__version__ == __version__ == importlib.metadata.version("charlstm")
    newest = re.search(r"^## \[([^\]]+)\] - \d{4}-\d{2}-\d{2}$", (DOCS / "changes.md").read_text("utf-8"), re.M)
    assert newest and newest.group(1) == __version__
