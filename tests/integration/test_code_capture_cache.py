"""The find_code plan cache: reused while nothing changed, recomputed as soon as anything did."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from structlog.testing import capture_logs
from tests.integration.test_code_capture import write

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.services.code_capture import CodePlan, capture_code, find_code

# Files a test writes are "racily" new (see code_capture: a plan depending on a path modified
# within a few seconds is not cached); dating them a minute back lets the cache be exercised.
AGE_NS = 60 * 1_000_000_000


def age(root: Path) -> None:
    """Date every file and folder under ``root`` (and ``root``) a minute back."""
    then = time.time_ns() - AGE_NS
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(then, then))


def cached(first: CodePlan, second: CodePlan) -> bool:
    """Whether ``second`` was served from the plan ``first`` came from (same bytes objects).

    A recomputed plan reads every file again, which makes new bytes objects.
    """
    assert first.entry is not None
    assert second.entry is not None
    return second.files.get(second.entry) is first.files.get(first.entry)


def served_twice(target: object) -> CodePlan:
    """Call find_code twice, check the second call was a cache hit, return its plan."""
    first = find_code(target)
    second = find_code(target)
    assert second == first
    assert cached(first, second), "expected the second call to reuse the cached plan"
    return second


@pytest.fixture
def quiet_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the interpreter's and the venv's folders on sys.path.

    An import that does not resolve locally makes the plan depend on every sys.path folder;
    the test folders there change whenever someone adds a test, which would make a test
    expecting a cache hit flaky.
    """
    kept = [
        p for p in sys.path if isinstance(p, str) and p.startswith((sys.base_prefix, sys.prefix))
    ]
    monkeypatch.setattr(sys, "path", kept)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project (pyproject.toml marks its root) whose strategy imports a local module."""
    root = tmp_path / "proj"
    write(
        root,
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "run.py": "import helpers\n\nclass Strategy:\n    pass\n",
            "helpers.py": "H = 1\n",
        },
    )
    age(root)
    return root


def test_unchanged_files_are_served_from_the_cache(project: Path) -> None:
    """A second call with nothing changed returns an equal plan without re-reading files."""
    plan = served_twice(project / "run.py")
    assert sorted(plan.files) == ["helpers.py", "run.py"]
    assert plan.files["run.py"] == (project / "run.py").read_bytes()


def test_a_content_edit_is_seen(project: Path) -> None:
    """Editing a file the plan read (size changes) makes the next call read it again."""
    served_twice(project / "run.py")
    (project / "helpers.py").write_text("H = 12345\n")
    assert find_code(project / "run.py").files["helpers.py"] == b"H = 12345\n"


def test_a_same_size_edit_with_a_new_mtime_is_seen(project: Path) -> None:
    """Same-size content with only a new mtime is seen, and is then cached in turn."""
    helpers = project / "helpers.py"
    served_twice(project / "run.py")
    before = helpers.stat()
    helpers.write_text("H = 2\n")  # same size as "H = 1\n"
    os.utime(helpers, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert helpers.stat().st_size == before.st_size
    assert served_twice(project / "run.py").files["helpers.py"] == b"H = 2\n"


def test_a_file_with_a_recent_or_future_mtime_is_never_trusted(project: Path) -> None:
    """A path whose timestamp is not safely past is re-read: a same-tick write is not lost."""
    helpers = project / "helpers.py"
    soon = time.time_ns() + AGE_NS
    os.utime(helpers, ns=(soon, soon))
    first = find_code(project / "run.py")
    second = find_code(project / "run.py")
    assert second == first
    assert not cached(first, second)
    helpers.write_text("H = 3\n")  # same size; the mtime set back to the same value
    os.utime(helpers, ns=(soon, soon))
    assert find_code(project / "run.py").files["helpers.py"] == b"H = 3\n"


@pytest.mark.usefixtures("quiet_sys_path")
@pytest.mark.parametrize(
    ("strategy", "module", "imports"),
    [
        ("run.py", "signals.py", "import signals\n"),
        ("strats/sma.py", "strats/signals.py", "from . import signals\n"),
    ],
)
def test_a_new_local_module_is_seen(
    tmp_path: Path, strategy: str, module: str, imports: str
) -> None:
    """An import that did not resolve is followed once the module appears beside it."""
    root = tmp_path / "proj"
    write(root, {"pyproject.toml": "", "strats/__init__.py": "", strategy: imports})
    age(root)
    assert sorted(served_twice(root / strategy).files) == sorted(
        {strategy, *(["strats/__init__.py"] if "/" in strategy else [])}
    )
    write(root, {module: "def crossed():\n    return True\n"})
    plan = find_code(root / strategy)
    assert plan.files[module] == b"def crossed():\n    return True\n"


def test_adding_and_removing_strategy_yaml_is_seen(project: Path) -> None:
    """A strategy.yaml appearing replaces the import analysis; removing it restores it."""
    assert served_twice(project / "run.py").source == "imports"
    write(project, {"strategy.yaml": "files: [helpers.py]\n"})
    with_yaml = find_code(project / "run.py")
    assert with_yaml.source == "strategy.yaml"
    assert sorted(with_yaml.files) == ["helpers.py", "run.py", "strategy.yaml"]
    age(project)
    served_twice(project / "run.py")
    (project / "strategy.yaml").unlink()
    assert find_code(project / "run.py").source == "imports"


def test_a_listed_file_appearing_is_seen_and_warnings_are_kept(project: Path) -> None:
    """A strategy.yaml entry missing at first (a warning) is captured once it exists."""
    write(project, {"strategy.yaml": "files: [lib/extra.py]\n"})
    age(project)
    plan = served_twice(project / "run.py")
    assert len(plan.warnings) == 1
    assert "lib/extra.py" in plan.warnings[0]
    write(project, {"lib/extra.py": "E = 1\n"})
    plan = find_code(project / "run.py")
    assert plan.files["lib/extra.py"] == b"E = 1\n"
    assert plan.warnings == ()


def test_warnings_are_logged_again_on_a_cache_hit(project: Path, tmp_path: Path) -> None:
    """capture_code logs a cached plan's warnings on every call, as for a fresh one."""
    write(project, {"strategy.yaml": "files: [gone.py]\n"})
    age(project)
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    for _ in range(2):
        with capture_logs() as logs:
            captured = capture_code(store, project / "run.py")
        assert any("gone.py" in entry["event"] for entry in logs)
        assert any("gone.py" in warning for warning in captured.warnings)
    served_twice(project / "run.py")


def test_deleting_a_file_is_seen(project: Path) -> None:
    """A deleted module drops out of the plan; a deleted strategy file is an error again."""
    served_twice(project / "run.py")
    (project / "helpers.py").unlink()
    assert sorted(find_code(project / "run.py").files) == ["run.py"]
    (project / "run.py").unlink()
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_code(project / "run.py")


def test_a_retargeted_symlink_is_seen(project: Path) -> None:
    """A target path that now leads to another file is not served the old file's plan."""
    write(project, {"v1.py": "VERSION = 1\n", "v2.py": "VERSION = 22\n"})
    link = project / "current.py"
    link.symlink_to(project / "v1.py")
    age(project)
    assert served_twice(link).files["v1.py"] == b"VERSION = 1\n"
    link.unlink()
    link.symlink_to(project / "v2.py")
    assert sorted(find_code(link).files) == ["v2.py"]


def test_relative_paths_follow_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same relative path from another current folder names another file."""
    for name in ("a", "b"):
        write(tmp_path / name, {"pyproject.toml": "", "run.py": f"NAME = {name!r}\n"})
        age(tmp_path / name)
    monkeypatch.chdir(tmp_path / "a")
    assert served_twice("run.py").files["run.py"] == b"NAME = 'a'\n"
    monkeypatch.chdir(tmp_path / "b")
    assert find_code("run.py").files["run.py"] == b"NAME = 'b'\n"


@pytest.mark.usefixtures("quiet_sys_path")
def test_a_changed_sys_path_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that becomes importable through sys.path is followed on the next call."""
    write(tmp_path / "proj", {".git/HEAD": "", "run.py": "import extlib.tool\n"})
    write(tmp_path / "elsewhere", {"extlib/__init__.py": "", "extlib/tool.py": "T = 1\n"})
    age(tmp_path / "proj")
    assert sorted(served_twice(tmp_path / "proj" / "run.py").files) == ["run.py"]
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    assert "_outside/extlib/tool.py" in find_code(tmp_path / "proj" / "run.py").files


@pytest.fixture
def strategy_module(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A strategy module of the project imported for real, as a researcher's loop would."""
    write(
        project,
        {
            "qt_cache_strategy.py": """
                class Strategy:
                    def size(self):
                        import helpers
                        return helpers.H
            """
        },
    )
    monkeypatch.syspath_prepend(str(project))
    module = importlib.import_module("qt_cache_strategy")
    age(project)  # after the import, which may write __pycache__ into the project
    yield module
    sys.modules.pop("qt_cache_strategy", None)


def test_a_class_target_is_cached_and_sees_edits(
    project: Path, strategy_module: ModuleType
) -> None:
    """find_code(StrategyClass) is cached too, and reads its module's file as it is now."""
    target = strategy_module.Strategy
    plan = served_twice(target)
    assert plan.entry == "qt_cache_strategy.py"
    assert sorted(plan.files) == ["helpers.py", "qt_cache_strategy.py"]
    (project / "qt_cache_strategy.py").write_text("class Strategy:\n    edited = True\n")
    assert sorted(find_code(target).files) == ["qt_cache_strategy.py"]


def test_interactive_targets_are_recovered_each_time(tmp_path: Path) -> None:
    """Code without a .py file is not cached: its source is recovered on every call."""
    source = "def strategy(x):\n    return x + 1\n"
    path = tmp_path / "cell_1.txt"
    path.write_text(source)
    namespace: dict[str, object] = {"__name__": "notebook_cell_module_cache"}
    exec(compile(source, str(path), "exec"), namespace)
    first = find_code(namespace["strategy"])
    second = find_code(namespace["strategy"])
    assert first == second
    assert first.files == {"strategy.py": source.encode()}
    assert not cached(first, second)


def test_a_caller_changing_its_plan_cannot_change_the_cache(project: Path) -> None:
    """Each call gets its own files dict; a cached plan survives callers that edit theirs."""
    first = served_twice(project / "run.py")  # from the cache, like every later call
    first.files["run.py"] = b"tampered"
    first.files.pop("helpers.py")
    second = find_code(project / "run.py")
    assert second.files["run.py"] == (project / "run.py").read_bytes()
    assert sorted(second.files) == ["helpers.py", "run.py"]
    assert cached(second, find_code(project / "run.py"))


def test_a_cached_plan_pickles(project: Path) -> None:
    """A cached plan crosses to a recording process: it pickles to an equal plan."""
    plan = served_twice(project / "run.py")
    assert pickle.loads(pickle.dumps(plan)) == plan


def test_the_cache_keeps_only_recent_plans(tmp_path: Path) -> None:
    """The cache is bounded: after many other targets, the oldest plan is recomputed."""
    root = tmp_path / "many"
    write(root, {"pyproject.toml": ""})
    write(root, {f"s{i}.py": f"ID = {i}\n" for i in range(80)})
    age(root)
    oldest = find_code(root / "s0.py")
    for i in range(1, 80):
        find_code(root / f"s{i}.py")
    latest = find_code(root / "s79.py")
    assert not cached(oldest, find_code(root / "s0.py"))
    assert cached(latest, find_code(root / "s79.py"))


def test_threads_share_the_cache_safely(project: Path, tmp_path: Path) -> None:
    """Many threads calling find_code on several targets all get correct plans."""
    other = tmp_path / "other"
    write(other, {"pyproject.toml": "", "main.py": "import util\n", "util.py": "U = 1\n"})
    age(other)
    expected = {
        project / "run.py": find_code(project / "run.py"),
        other / "main.py": find_code(other / "main.py"),
    }
    failures: list[str] = []

    def work(seed: int) -> None:
        for i in range(200):
            target = list(expected)[(seed + i) % 2]
            plan = find_code(target)
            if plan != expected[target]:
                failures.append(f"{target}: {sorted(plan.files)}")
            plan.files.clear()  # a caller mutating its copy must not disturb the others

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
