"""The HTML report: its content, and that it renders in headless Chromium without errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from quantrack.cli._errors import EXIT_ERROR, EXIT_NOT_FOUND
from quantrack.domain import ExperimentDefinition
from quantrack.reports import build_report, collect_report_data
from quantrack.services.recording import track
from quantrack.workspace import Workspace
from tests.cli.conftest import Invoke
from tests.cli.helpers import Recorded

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=8000",
)


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and possible; else a skip."""
    found = _find_chromium()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            capture_output=True,
            timeout=900,
            check=False,
        )
        found = _find_chromium()
    if found is None:
        pytest.skip(
            "headless Chromium is not installed and cannot be installed here "
            "(run `apt-get install -y chromium` as root to enable this test)"
        )
    return found


def _browse(
    chromium: str, page: Path, profile: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """The page's console messages (errors, uncaught exceptions) in Chromium's log."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE(:|\()", line)]


def _report(invoke: Invoke, recorded: Recorded, path: Path) -> dict[str, object]:
    args = ["report", recorded.runs["sma-fast"], recorded.runs["sma-broken"], recorded.batch_id]
    result = invoke([*args, "-o", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_report_is_self_contained_with_every_section(
    invoke: Invoke, recorded: Recorded, tmp_path: Path
) -> None:
    """The page embeds plotly.js and holds curves, drawdowns, heat map, metrics and params."""
    out = tmp_path / "report.html"
    data = _report(invoke, recorded, out)
    page = out.read_text()
    assert "<script src=" not in page
    assert page.count("Plotly.newPlot") == 3
    for text in ("Equity curves", "Drawdowns", "Heat map of sharpe", "Metrics", "Params"):
        assert text in page
    assert data["heatmap"] == {"metric": "sharpe", "x": "fast_window", "y": "slow_window"}
    notes = data["notes"]
    assert isinstance(notes, list)
    assert any("sma-broken" in note and "no equity curve" in note for note in notes)
    assert recorded.runs["sma-fast"] in data["curves"]  # type: ignore[operator]


def test_report_escapes_names(memory_workspace: Workspace) -> None:
    """Run names and params are escaped, so a name cannot inject markup into the page."""
    definition = ExperimentDefinition(name="<script>alert(1)</script>", params={"x": "<b>"})
    with track(memory_workspace.tracker, memory_workspace.artifacts, definition) as run:
        run.log_metric("sharpe", 1.0)
    experiment = memory_workspace.tracker.get_experiment(run.id)
    page = build_report(collect_report_data(memory_workspace, [experiment], []))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;" in page


def test_report_bad_input(invoke: Invoke, recorded: Recorded, tmp_path: Path) -> None:
    """An unknown id or a heat-map param no run has is a clear one-line error."""
    unknown = invoke(["report", "nothing-here", "-o", str(tmp_path / "x.html")])
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert "is neither a run nor a batch" in unknown.stderr
    bad_param = invoke(["report", recorded.batch_id, "--x", "nope", "-o", str(tmp_path / "y.html")])
    assert bad_param.exit_code == EXIT_ERROR
    assert "no run of the batch has a param 'nope'" in bad_param.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(
    chromium: str, invoke: Invoke, recorded: Recorded, tmp_path: Path
) -> None:
    """Chromium renders all three plots with no console errors; a screenshot is kept."""
    out = tmp_path / "report.html"
    _report(invoke, recorded, out)
    dom = _browse(chromium, out, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    assert dom.stdout.count('class="main-svg"') >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    pictured = _browse(
        chromium, out, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400"
    )
    assert pictured.returncode == 0, pictured.stderr[-2000:]
    assert console_messages(pictured.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_console_check_catches_errors(chromium: str, tmp_path: Path) -> None:
    """The console check above is real: a page that throws is caught by it."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>missingFunction();</script></body></html>")
    result = _browse(chromium, page, tmp_path / "profile", "--dump-dom")
    messages = console_messages(result.stderr)
    assert any("Uncaught ReferenceError: missingFunction" in m for m in messages)
