"""Every ```python block of every docs/*.md page runs, in order, in one namespace per page."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

# An opening fence of exactly ```python (```text and ```console are not executed).
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class DocExampleFailed(AssertionError):
    """A python block of a docs page raised."""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The page's python blocks as (line of the first code line, code), in order."""
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in _FENCE.finditer(text)
    ]


def run_page(page: Path) -> None:
    """Run the page's python blocks in order in one namespace; raise naming file and line."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, code in python_blocks(page.read_text("utf-8")):
        try:
            # The file name carries the block's first line, so tracebacks point into the page.
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as exc:
            raise DocExampleFailed(
                f"{page.name}: the python block starting at line {line} failed:\n"
                f"{traceback.format_exc()}"
            ) from exc


README = DOCS.parent / "README.md"


def _pages() -> list[Path]:
    # The README's 30-second example is documentation too, and must keep working.
    pages = [README, *sorted(DOCS.glob("*.md"))]
    return [page for page in pages if python_blocks(page.read_text("utf-8"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.name)
def test_docs_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python example on the page runs without error, in order, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUANTRACK_HOME", str(tmp_path / "ws"))
    try:
        run_page(page)
    except DocExampleFailed as failure:
        pytest.fail(str(failure), pytrace=False)


def test_block_finder_reports_lines() -> None:
    """The block finder returns each python block with the line its code starts on."""
    text = "# t\n\n```python\nx = 1\n```\n\n```text\nno\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(4, "x = 1\n"), (11, "y = x\n")]


def test_blocks_share_a_namespace_and_failures_name_file_and_line(tmp_path: Path) -> None:
    """Later blocks see earlier names; a failing block is reported with its page and line."""
    page = tmp_path / "guide.md"
    page.write_text(
        "# Guide\n\n```python\nx = 2\n```\n\n```console\n$ not run\n```\n\n"
        "```python\nassert x == 2\nraise RuntimeError('broken example')\n```\n"
    )
    with pytest.raises(DocExampleFailed) as caught:
        run_page(page)
    message = str(caught.value)
    assert message.startswith("guide.md: the python block starting at line 12 failed")
    assert "RuntimeError: broken example" in message
    assert f"{page}:12" in message


def test_pages_without_python_are_skipped() -> None:
    """A page without python blocks yields nothing to run."""
    assert python_blocks("# Only prose\n\n```text\nx\n```\n") == []
