"""The documentation's code runs, and its generated output is what contsnap prints today.

Every ```python block of ``README.md`` and ``docs/*.md`` is executed, so an
example cannot go stale. The blocks of one page run in order, in one fresh
interpreter, as one ``__main__`` script in a temporary working directory (so
a later block sees what an earlier one defined, as a reader would). The script
keeps the page's line numbers: a traceback's ``<page>.md.py", line N`` is
line N of the page.

Markers, written as HTML comments (invisible on the site and on GitHub), on
the lines just before a block's opening fence:

``<!-- docs-test: skip -->``
    the block is shown, not run: a fragment (``...`` standing for user code,
    names the page does not define), an IPython magic, generated code.
``<!-- docs-test: setup`` ... ``-->``
    the lines up to ``-->`` are hidden code run just before the next block,
    e.g. a stub for the web API an example calls.

A line ``--8<-- "path"`` inside a block is a pymdownx.snippets include (as
``mkdocs.yml`` configures it): the site shows that file, and the test runs that
file, compiled under its own name so ``inspect.getsource`` finds it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SNIPPET_DIRS = [DOCS / "snippets", ROOT]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")
_SKIP = "<!-- docs-test: skip -->"
_SETUP = "<!-- docs-test: setup"
_INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')


@dataclass
class Block:
    """A fenced code block: its language, first code line (1-based) and its lines."""

    lang: str
    start: int
    lines: list[str]
    skip: bool = False
    setup: list[tuple[int, str]] = field(default_factory=list)


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the markers that precede them."""
    blocks: list[Block] = []
    lines = text.split("\n")
    pending_skip = False
    pending_setup: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == _SKIP:
            pending_skip = True
        elif line.strip().startswith(_SETUP):
            i += 1
            while i < len(lines) and lines[i].strip() != "-->":
                pending_setup.append((i + 1, lines[i]))
                i += 1
        elif opening := _FENCE.match(line):
            indent, fence = opening["indent"], opening["fence"]
            body = []
            start = i + 2
            i += 1
            while i < len(lines) and not (
                lines[i].strip() == fence and lines[i].startswith(indent)
            ):
                body.append(lines[i][len(indent) :])
                i += 1
            lang = opening["info"].strip().split(" ")[0] if opening["info"].strip() else ""
            blocks.append(Block(lang, start, body, pending_skip, pending_setup))
            pending_skip, pending_setup = False, []
        elif line.strip():
            pending_skip, pending_setup = False, []
        i += 1
    return blocks


def _snippet(path: str) -> Path:
    for folder in SNIPPET_DIRS:
        if (folder / path).is_file():
            return folder / path
    raise FileNotFoundError(f"snippet {path!r} not found in {SNIPPET_DIRS}")


def page_script(text: str) -> str | None:
    """The page's runnable code as one script whose line N is line N of the page."""
    out = [""] * (text.count("\n") + 2)
    runnable = False
    for block in code_blocks(text):
        if block.lang != "python" or block.skip:
            continue
        runnable = True
        code = textwrap.dedent("\n".join(block.lines)).split("\n")
        setup = textwrap.dedent("\n".join(line for _, line in block.setup)).split("\n")
        if block.setup:
            first = block.setup[0][0]
            out[first - 1 : first - 1 + len(setup)] = setup
        for offset, line in enumerate(code):
            included = _INCLUDE.match(line)
            if included:
                path = str(_snippet(included["path"]))
                line = f"exec(compile(open({path!r}).read(), {path!r}, 'exec'))"
            out[block.start - 1 + offset] = line
    return "\n".join(out) if runnable else None


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [p for p in PAGES if page_script(p.read_text(encoding="utf-8")) is not None]


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    script = tmp_path / f"{page.name}.py"
    script.write_text(page_script(page.read_text(encoding="utf-8")) or "", encoding="utf-8")
    env = dict(os.environ, CONTSNAP_QUIET="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, f"{_page_id(page)}:\n{out.stdout}{out.stderr}"


def test_the_pages_that_teach_by_example_run() -> None:
    """Marking every block of these pages skip would silently stop testing them."""
    assert {"tutorial.md", "durable.md", "guide.md", "resources.md", "README.md"} <= {
        p.name for p in RUNNABLE
    }


def test_markers_are_read() -> None:
    text = (
        "intro\n\n<!-- docs-test: skip -->\n```python\nnot run\n```\n\n"
        "<!-- docs-test: setup\nx = 1\n-->\n```python\nassert x == 1\n```\n"
        "text\n\n```bash\necho hi\n```\n"
    )
    skipped, with_setup, shell = code_blocks(text)
    assert skipped.skip and not with_setup.skip
    assert with_setup.setup == [(9, "x = 1")] and with_setup.start == 12
    assert shell.lang == "bash"
    script = page_script(text)
    assert script is not None
    lines = script.split("\n")
    assert lines[8] == "x = 1" and lines[11] == "assert x == 1" and "not run" not in script


# -- generated output checked in for the site -------------------------------------------

_FINGERPRINT = re.compile(r"fingerprint [0-9a-f]{16}")
SHOWN = [
    # (the file shown, the checked-in output of `python -m contsnap show FILE`)
    ("docs/snippets/running_total.py", "docs/snippets/running_total.show.txt"),
]


@pytest.mark.parametrize(("source", "expected"), SHOWN)
def test_checked_in_show_output_is_current(source: str, expected: str) -> None:
    """docs/how-it-works.md shows this output; regenerate it with the command in the page."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, "-m", "contsnap", "show", source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    # the fingerprint hashes ast.dump(), whose text differs between Python versions
    current, checked_in = (
        _FINGERPRINT.sub("fingerprint <hex>", text)
        for text in (out.stdout, (ROOT / expected).read_text(encoding="utf-8"))
    )
    assert current == checked_in, (
        f"`python -m contsnap show {source}` changed; regenerate {expected} with\n"
        f"    python -m contsnap show {source} > {expected}"
    )


def _public_docstrings() -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of what the API reference page renders."""
    import inspect

    import contsnap
    import contsnap.actors
    import contsnap.stores
    import contsnap.testing

    for module in (contsnap, contsnap.actors, contsnap.stores, contsnap.testing):
        yield module.__name__, module.__doc__ or ""
        for name in module.__all__:
            obj = getattr(module, name)
            yield f"{module.__name__}.{name}", inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    doc = getattr(member, "__doc__", None)
                    if not attr.startswith("_") and isinstance(doc, str):
                        yield f"{module.__name__}.{name}.{attr}", doc


def test_the_api_reference_shows_no_raw_sphinx_roles() -> None:
    # the site renders Markdown: `name` and [`name`][contsnap.name] cross-references;
    # a Sphinx role such as :func:`name` would be shown as it is written
    role = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`")
    raw = sorted(name for name, doc in _public_docstrings() if role.search(doc))
    assert raw == []
