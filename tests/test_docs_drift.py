"""The docs name what the code has, and the code has what the docs name.

Four kinds of name are checked both ways between the code and the pages (README.md and every page
of the site, the generated Commands and Python API references included, as the built site shows
them):

- every flag of every ``charlstm`` command, each with a help text, so that its line in the
  Commands reference says what it does; every ``--flag`` a page names is a flag of charlstm, of a
  script in ``benchmarks/`` or ``tests/``, or of another tool listed in ``FOREIGN_FLAGS``;
- every route of the server (``charlstm/serving/app.py``); every ``/v1/...`` path and every
  ``GET /x`` or ``POST /x`` a page names is a route;
- every Prometheus metric (``charlstm/serving/metrics.py``); every ``charlstm_...`` metric a page
  names is one (Prometheus' ``_total``, ``_bucket``, ``_sum`` and ``_count`` series included);
- every public API name (``charlstm.__all__``, ``charlstm.api.__all__``, the public methods and
  properties of ``Model`` and ``Session``); every ``charlstm.x`` a page names exists, and so does
  every method a page calls on a model (``lm.x``) or a session (``chat.x``).

The changelog (docs/changes.md) is left out of the second direction: it names what was removed or
renamed. ``test_a_flag_added_without_docs_is_reported`` shows the check failing."""

from __future__ import annotations

import dataclasses
import html
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = {"commands.md", "api-reference.md"}  # filled in by mkdocs-click and mkdocstrings at build time
HISTORY = {"changes.md"}  # names what was removed or renamed: not checked against the code

# Flags of other programs that the pages show, by program.
FOREIGN_FLAGS = {
    "torchrun": {"--standalone", "--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-backend", "--rdzv-endpoint"},
    "tensorboard": {"--logdir"},
    "mkdocs": {"--strict"},
    "chromium": {"--headless", "--dump-dom"},
    "zstd": {"--ultra"},
    # lm_eval's flags are spelt with underscores (--model_args, --apply_chat_template): read up to the first
    "lm_eval": {"--model", "--tasks", "--apply"},
    # `sample --interactive` is named as what charlstm chat is instead of
    "not a flag (named in the prose as what chat is not)": {"--interactive"},
}


@dataclasses.dataclass
class Names:
    """What the code has: flags (with the commands that have each), routes, metrics, API names."""

    flags: dict[str, list[str]]
    hidden_flags: set[str]
    without_help: list[str]
    routes: set[str]
    metrics: set[str]
    api: set[str]


def _commands(command: click.Command, path: str = "charlstm"):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def code_names() -> Names:
    from charlstm.cli import cli

    flags: dict[str, list[str]] = {}
    hidden, without_help = set(), []
    for path, command in _commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            long = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
            if param.hidden:  # an old spelling kept for a release: not in --help, still a flag
                hidden.update(long)
                continue
            for flag in long:
                flags.setdefault(flag, []).append(path)
            if not (param.help or "").strip():
                without_help.append(f"{path} {long[0]}")
    flags.setdefault("--version", ["charlstm"])
    app = (ROOT / "charlstm" / "serving" / "app.py").read_text("utf-8")
    routes = set(re.findall(r"\bRoute\(\s*\"([^\"]+)\"", app))
    metrics_source = (ROOT / "charlstm" / "serving" / "metrics.py").read_text("utf-8")
    metrics = set(re.findall(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(\w+)\"", metrics_source))

    import charlstm
    import charlstm.api

    api = set(charlstm.__all__) | set(charlstm.api.__all__)
    for cls in (charlstm.api.Model, charlstm.api.Session):
        api |= {f"{cls.__name__}.{name}" for name in dir(cls) if not name.startswith("_")}
    return Names(flags, hidden, without_help, routes, metrics, api)


# ------------------------------------------------------------------------------------ the pages


def _text_of(html_page: str) -> str:
    """The words of a built page: tags dropped, entities read."""
    main = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", html_page)
    return html.unescape(re.sub(r"<[^>]+>", " ", main))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as ``mkdocs build --strict`` makes it: the generated references filled in."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return out


def pages(site: Path) -> dict[str, str]:
    """Each page's text by name: the Markdown of the hand-written ones (README.md and docs/),
    the built HTML's text of the generated ones."""
    found = {"README.md": (ROOT / "README.md").read_text("utf-8")}
    for page in sorted(DOCS.glob("*.md")):
        if page.name in GENERATED:
            found[page.name] = _text_of((site / page.stem / "index.html").read_text("utf-8"))
        else:
            found[page.name] = page.read_text("utf-8")
    return found


# ------------------------------------------------------------------------------------ the check


def _tool_flags() -> set[str]:
    """The flags of the scripts in benchmarks/ and tests/ (argparse), which pages show too."""
    found = set()
    for script in [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("tests/**/*.py")]:
        found |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", script.read_text("utf-8")))
    return found


_METRIC_SERIES = re.compile(r"_(total|bucket|sum|count|created)$")


def _route_pattern(route: str) -> re.Pattern:
    """``/v1/models/{name:path}`` matches ``/v1/models/NAME`` and ``/v1/models/{name}``."""
    parts = re.split(r"\{[^}]+\}", route)
    return re.compile("(?<![\\w/.])" + "[^\\s`/]+".join(re.escape(p) for p in parts) + r"(?![\w/])")


def _api_named(name: str, text: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return re.search(rf"(?<![\w]){re.escape(last)}(?!\w)", text) is not None


def _metadata_keys() -> set[str]:
    """The ``"charlstm.x"`` keys the package writes (an exported folder's metadata)."""
    found = set()
    for source in (ROOT / "charlstm").rglob("*.py"):
        found |= set(re.findall(r"[\"'](charlstm\.[\w.]+)[\"']", source.read_text("utf-8")))
    return found


def _resolves(dotted: str) -> bool:
    """``charlstm.x.y``: an attribute or a module, all the way down (or a metadata key)."""
    if dotted in _metadata_keys():
        return True
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        module = ".".join(parts[: i + 1])
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except ModuleNotFoundError:
            return False
        obj = importlib.import_module(module)
    return True


def drift(code: Names, found: dict[str, str]) -> list[str]:
    """Every name the code has that no page names, and every name a page names that the code
    lacks: one line each (an empty list: no drift)."""
    problems = []
    everything = "\n".join(found.values())

    # code -> docs
    for flag, where in sorted(code.flags.items()):
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", everything):
            problems.append(f"{where[0]} {flag}: in the code, in no page")
    problems += [f"{flag}: no help text, so the Commands reference says nothing of it" for flag in code.without_help]
    for route in sorted(code.routes):
        if not _route_pattern(route).search(everything):
            problems.append(f"route {route}: in charlstm/serving/app.py, in no page")
    for metric in sorted(code.metrics):
        if not re.search(rf"\b{metric}(_total|_bucket|_sum|_count)?\b", everything):
            problems.append(f"metric {metric}: in charlstm/serving/metrics.py, in no page")
    for name in sorted(code.api):
        if not _api_named(name, everything):
            problems.append(f"API name {name}: in the code, in no page")

    # docs -> code
    known_flags = set(code.flags) | code.hidden_flags | {"--help"} | _tool_flags()
    known_flags |= set().union(*FOREIGN_FLAGS.values())
    methods = {name.split(".", 1)[1] for name in code.api if "." in name}
    model_methods = {n.split(".", 1)[1] for n in code.api if n.startswith("Model.")}
    session_methods = {n.split(".", 1)[1] for n in code.api if n.startswith("Session.")}
    for page, text in found.items():
        if page in HISTORY or page in GENERATED:
            continue
        for flag in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - known_flags):
            problems.append(f"{page}: {flag} is no flag of charlstm (nor of a script or tool the pages show)")
        paths = set(re.findall(r"(?<![\w.])(/v1/[\w/{}.-]*\w)", text))
        paths |= set(re.findall(r"\b(?:GET|POST) (/[\w/{}.-]*)", text))
        for path in sorted(paths):
            if not any(_route_pattern(r).fullmatch(path) or _route_pattern(r).search(f" {path} ") for r in code.routes):
                problems.append(f"{page}: {path} is no route of the server")
        for metric in sorted(set(re.findall(r"\bcharlstm_[a-z][a-z0-9_]*", text))):
            if _METRIC_SERIES.sub("", metric) not in code.metrics and metric not in code.metrics:
                problems.append(f"{page}: {metric} is no metric of the server")
        for dotted in sorted(set(re.findall(r"(?<![\w./-])charlstm(?:\.[A-Za-z_]\w*)+", text))):
            if not _resolves(dotted):
                problems.append(f"{page}: {dotted} does not exist")
        for var, method in sorted(set(re.findall(r"(?<![\w/])(lm|Model|chat|Session)\.([a-z_]\w*)\b(?!\.)", text))):
            have = model_methods if var in ("lm", "Model") else session_methods
            attributes = {"module", "tokenizer", "config", "device", "path", "info", "weights"} if have is model_methods else set()
            if method not in have | attributes and method not in methods:
                problems.append(f"{page}: {var}.{method} is no method of {'Model' if have is model_methods else 'Session'}")
    return problems


# ------------------------------------------------------------------------------------ the tests


def test_the_docs_and_the_code_name_the_same_things(site):
    assert drift(code_names(), pages(site)) == []


def test_the_generated_references_are_in_the_site(site):
    commands = _text_of((site / "commands" / "index.html").read_text("utf-8"))
    for command in ("charlstm train", "charlstm sample", "charlstm serve", "charlstm export", "long-range"):
        assert command in commands
    api = (site / "api-reference" / "index.html").read_text("utf-8")
    for anchor in ("charlstm.api.load", "charlstm.api.Model.generate", "charlstm.api.Session.reply"):
        assert f'id="{anchor}"' in api


def test_a_flag_added_without_docs_is_reported(site, monkeypatch):
    """A new flag the site's pages do not have (the site was built before it was added), and one
    with no help text, are both reported; so is a page naming a flag the code does not have."""
    from charlstm.cli import cli

    sample = cli.commands["sample"]
    monkeypatch.setattr(sample, "params", [
        *sample.params,
        click.Option(["--brand-new-filter"], type=float, help="A filter nobody documented."),
        click.Option(["--silent-switch"], is_flag=True),
    ])
    found = pages(site)
    problems = drift(code_names(), found)
    assert "charlstm sample --brand-new-filter: in the code, in no page" in problems
    assert "charlstm sample --silent-switch: no help text, so the Commands reference says nothing of it" in problems

    monkeypatch.setattr(sample, "params", sample.params[:-2])
    found["generating.md"] += "\n`charlstm sample RUN --top-q 0.5`, `POST /v1/audio/speech`, `charlstm_cache_hits_total`, `lm.summarise()`\n"
    problems = drift(code_names(), found)
    assert "generating.md: --top-q is no flag of charlstm (nor of a script or tool the pages show)" in problems
    assert "generating.md: /v1/audio/speech is no route of the server" in problems
    assert "generating.md: charlstm_cache_hits_total is no metric of the server" in problems
    assert "generating.md: lm.summarise is no method of Model" in problems


def test_a_route_a_metric_and_an_api_name_without_docs_are_reported(site):
    code = code_names()
    code.routes.add("/v1/embeddings")
    code.metrics.add("charlstm_cache_hits")
    code.api.add("Model.distill")
    problems = drift(code, pages(site))
    assert "route /v1/embeddings: in charlstm/serving/app.py, in no page" in problems
    assert "metric charlstm_cache_hits: in charlstm/serving/metrics.py, in no page" in problems
    assert "API name Model.distill: in the code, in no page" in problems
