"""Strategy code capture: import analysis, strategy.yaml, interactive code, storage."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.services.code_capture import (
    CODE_KIND,
    MANIFEST_KIND,
    capture_code,
    code_hash,
    find_code,
    read_manifest,
)


def write(root: Path, files: dict[str, str]) -> None:
    """Create ``files`` (relative path → source) under ``root``."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project: a strategy importing local packages, stdlib and an installed library."""
    root = tmp_path / "proj"
    write(
        root,
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "strategies/__init__.py": "",
            "strategies/sma.py": """
                import json
                import numpy as np
                import quantrack
                from . import signals
                from .util.sizing import size
                from lib import indicators
                import lib.risk as risk

                class SmaCross:
                    def run(self):
                        from lib.lazy import late  # imports inside functions count too
                        return late
            """,
            "strategies/signals.py": "from .util import helpers\n",
            "strategies/util/__init__.py": "",
            "strategies/util/sizing.py": "def size():\n    return 1\n",
            "strategies/util/helpers.py": "import os\n",
            "lib/__init__.py": "from lib import shared\n",
            "lib/indicators.py": "from .shared import X\n",
            "lib/shared.py": "X = 1\nimport strategies.signals  # a cycle must terminate\n",
            "lib/risk.py": "import pandas\n",
            "lib/lazy.py": "late = 1\n",
            "lib/unused.py": "raise SystemExit('never captured, never run')\n",
            "data/prices.csv": "date,close\n",
        },
    )
    return root


@pytest.fixture
def imported(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The project's strategies.sma module, imported for real."""
    monkeypatch.syspath_prepend(str(project))
    yield importlib.import_module("strategies.sma")
    for name in list(sys.modules):
        if name.split(".")[0] in ("strategies", "lib"):
            del sys.modules[name]


EXPECTED = [
    "lib/__init__.py",
    "lib/indicators.py",
    "lib/lazy.py",
    "lib/risk.py",
    "lib/shared.py",
    "strategies/__init__.py",
    "strategies/signals.py",
    "strategies/sma.py",
    "strategies/util/__init__.py",
    "strategies/util/helpers.py",
    "strategies/util/sizing.py",
]


def test_follows_local_imports_from_a_path(project: Path) -> None:
    """From a file: relative, absolute, from-package and nested imports are all followed."""
    plan = find_code(project / "strategies" / "sma.py")
    assert sorted(plan.files) == EXPECTED
    assert plan.entry == "strategies/sma.py"
    assert plan.files["lib/risk.py"] == b"import pandas\n"
    assert plan.source == "imports"
    assert plan.warnings == ()


def test_skips_stdlib_site_packages_and_quantrack_but_reports_libraries(project: Path) -> None:
    """json/os are skipped silently; numpy and pandas are reported; quantrack is skipped."""
    plan = find_code(project / "strategies" / "sma.py")
    assert plan.packages == ("numpy", "pandas")
    assert not any("quantrack" in name or "json" in name for name in plan.files)


def test_starts_from_a_class_a_function_or_a_module(imported: object) -> None:
    """A class, a method's function and the module itself all lead to the same files."""
    module = imported
    cls = module.SmaCross  # type: ignore[attr-defined]
    for target in (cls, cls.run, module):
        plan = find_code(target)
        assert sorted(plan.files) == EXPECTED
        assert plan.entry == "strategies/sma.py"


def test_files_outside_the_project_keep_their_module_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local module found outside the project root is stored under _outside/."""
    write(tmp_path / "proj", {".git/HEAD": "", "run.py": "import extlib.tool\n"})
    write(tmp_path / "elsewhere", {"extlib/__init__.py": "", "extlib/tool.py": "T = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    plan = find_code(tmp_path / "proj" / "run.py")
    assert sorted(plan.files) == [
        "_outside/extlib/__init__.py",
        "_outside/extlib/tool.py",
        "run.py",
    ]


def test_a_script_finds_modules_beside_it(tmp_path: Path) -> None:
    """A script's sibling modules resolve without the folder being on sys.path."""
    write(tmp_path, {"run.py": "import helpers\nfrom . import nothing\n", "helpers.py": "H = 1\n"})
    plan = find_code(tmp_path / "run.py")
    assert sorted(plan.files) == ["helpers.py", "run.py"]


def test_a_file_that_does_not_parse_is_still_captured(tmp_path: Path) -> None:
    """A syntax error stops import analysis of that file, not its capture."""
    write(tmp_path, {"run.py": "def broken(:\n"})
    assert sorted(find_code(tmp_path / "run.py").files) == ["run.py"]


def test_strategy_yaml_lists_the_files_instead(tmp_path: Path) -> None:
    """A strategy.yaml beside the strategy replaces import analysis; it is captured too."""
    write(
        tmp_path,
        {
            "strategy.yaml": "files:\n  - params.json\n  - lib/indicators.py\n",
            "run.py": "import helpers\n",
            "helpers.py": "never = True\n",
            "params.json": "{}",
            "lib/indicators.py": "I = 1\n",
        },
    )
    plan = find_code(tmp_path / "run.py")
    assert sorted(plan.files) == ["lib/indicators.py", "params.json", "run.py", "strategy.yaml"]
    assert plan.source == "strategy.yaml"


def test_strategy_yaml_missing_file_is_a_warning(tmp_path: Path) -> None:
    """A listed file that does not exist is left out with a warning, not an error."""
    write(tmp_path, {"strategy.yaml": "files: [gone.py]\n", "run.py": "x = 1\n"})
    plan = find_code(tmp_path / "run.py")
    assert sorted(plan.files) == ["run.py", "strategy.yaml"]
    assert len(plan.warnings) == 1
    assert "gone.py" in plan.warnings[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("files: [/etc/passwd]\n", "relative path"),
        ("files: [../secret.py]\n", "no '..'"),
        ("files: notalist.py\n", "files"),
        ("paths: [a.py]\n", "files"),
        ("files: [a.py]\nextra: 1\n", "extra"),
        ("files: [a.py\n", "not readable YAML"),
        ("", "files"),
    ],
)
def test_an_invalid_strategy_yaml_is_a_clear_error(
    tmp_path: Path, content: str, message: str
) -> None:
    """Malformed strategy.yaml raises ValueError naming the file and what is wrong."""
    write(tmp_path, {"strategy.yaml": content, "run.py": "x = 1\n"})
    with pytest.raises(ValueError, match=r"strategy\.yaml") as raised:
        find_code(tmp_path / "run.py")
    assert message in str(raised.value)


def test_interactive_code_is_captured_from_its_source(tmp_path: Path) -> None:
    """A function from a module without a .py file is captured via inspect.getsource."""
    source = "import numpy\n\ndef strategy(x):\n    return x + 1\n"
    path = tmp_path / "cell_1.txt"
    path.write_text(source)
    namespace: dict[str, object] = {"__name__": "notebook_cell_module"}
    exec(compile(source, str(path), "exec"), namespace)
    plan = find_code(namespace["strategy"])
    assert plan.source == "source"
    assert plan.files == {"strategy.py": b"def strategy(x):\n    return x + 1\n"}


def test_code_without_source_is_a_warning(tmp_path: Path) -> None:
    """A function whose source Python cannot find yields no files and a warning."""
    namespace: dict[str, object] = {"__name__": "nowhere_module"}
    exec(compile("def ghost():\n    pass\n", "<string>", "exec"), namespace)
    plan = find_code(namespace["ghost"])
    assert plan.files == {}
    assert "could not be found" in plan.warnings[0]


def test_bad_targets_are_refused(tmp_path: Path) -> None:
    """A missing path raises FileNotFoundError; a plain value raises TypeError."""
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_code(tmp_path / "missing.py")
    with pytest.raises(TypeError, match="pass a class, a function"):
        find_code(42)


def test_capture_stores_files_and_a_manifest(tmp_path: Path, project: Path) -> None:
    """Each file becomes a code artifact; the manifest maps relative paths to their ids."""
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    captured = capture_code(store, project / "strategies" / "sma.py")
    assert sorted(captured.files) == EXPECTED
    assert captured.manifest is not None
    assert captured.manifest.kind == MANIFEST_KIND
    assert captured.refs[0] == captured.manifest
    assert all(ref.kind == CODE_KIND for ref in captured.refs[1:])
    assert captured.files["lib/risk.py"].name == "risk.py"
    mapping = read_manifest(store, captured.manifest)
    assert mapping == {name: ref.id for name, ref in captured.files.items()}
    assert store.get(mapping["strategies/util/sizing.py"]) == b"def size():\n    return 1\n"
    assert captured.code_hash == code_hash(mapping)


def test_code_hash_is_stable_and_tracks_content(tmp_path: Path, project: Path) -> None:
    """The same code hashes the same; editing one file changes the hash."""
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    entry = project / "strategies" / "sma.py"
    first = capture_code(store, entry)
    assert capture_code(store, entry).code_hash == first.code_hash
    (project / "lib" / "shared.py").write_text("X = 2\n")
    assert capture_code(store, entry).code_hash != first.code_hash


def test_capture_logs_warnings(tmp_path: Path) -> None:
    """Warnings found while capturing are logged as well as returned."""
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    namespace: dict[str, object] = {"__name__": "nowhere_module"}
    exec(compile("def ghost():\n    pass\n", "<string>", "exec"), namespace)
    with capture_logs() as logs:
        captured = capture_code(store, namespace["ghost"])
    assert captured.manifest is None
    assert captured.code_hash is None
    assert any("could not be found" in entry["event"] for entry in logs)


def test_read_manifest_refuses_foreign_or_unsafe_documents(tmp_path: Path) -> None:
    """A non-manifest artifact or one listing '../' paths raises ValueError."""
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ValueError, match="not a code manifest"):
        read_manifest(store, store.put(b"\x00\xff"))
    with pytest.raises(ValueError, match="quantrack-code/1"):
        read_manifest(store, store.put(b'{"files": {}}'))
    unsafe = b'{"format": "quantrack-code/1", "files": {"../evil.py": "' + b"a" * 64 + b'"}}'
    with pytest.raises(ValueError, match="unsafe path"):
        read_manifest(store, store.put(unsafe))
