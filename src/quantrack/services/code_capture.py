"""Strategy code capture: store the exact source that produced a run.

Starting from the file that defines the strategy (a class, a function, a module or a path),
:func:`find_code` parses its imports with :mod:`ast`, resolves each with the import system's
finders (without importing anything), and follows local modules recursively: absolute and
relative imports, ``from pkg import mod``, and the ``__init__.py`` of every package on the
way. The standard library, installed distributions (site-packages) and quantrack itself are
skipped; the top-level names of installed distributions are reported so provenance can
record their versions.

A ``strategy.yaml`` beside the strategy's file replaces the import analysis::

    files:            # paths relative to the folder holding strategy.yaml
      - signals.py
      - lib/indicators.py

Code defined in a notebook or an interactive ``__main__`` is captured from the source
Python can still find (``inspect.getsource``); when it cannot, a warning says so and the
run is recorded without it.

:func:`capture_code` stores each file as an artifact of kind ``code`` (display name: its
file name) and a manifest of kind ``code_manifest`` (JSON: relative path → artifact id),
which keeps the relative layout for export. Its ``code_hash`` is the sha256 of the
canonical JSON of that mapping, so two runs of the same code share it.

A research loop runs the same strategy hundreds of times, so :func:`find_code` keeps the
last 64 plans of file-backed targets and reuses one only while nothing it depended on has
changed: it records the ``os.stat`` signature (mtime and ctime in ns, size, inode, device)
of every file it read and every folder whose listing it consulted (import resolution,
``strategy.yaml``, the project root, ``sys.path``), each taken *before* that path was used,
and checks them all on reuse. Like git's "racily clean" rule, a plan that depends on a
path modified less than a few seconds before it was computed is not kept, since a second
write within one timestamp tick could leave the signature unchanged.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import sysconfig
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from quantrack.domain import ArtifactRef, canonical_json
from quantrack.domain._logging import get_logger
from quantrack.ports import ArtifactStore

__all__ = [
    "CODE_KIND",
    "MANIFEST_FORMAT",
    "MANIFEST_KIND",
    "STRATEGY_FILE",
    "CapturedCode",
    "CodePlan",
    "StrategyManifest",
    "capture_code",
    "code_hash",
    "find_code",
    "read_manifest",
]

_log = get_logger(__name__)

CODE_KIND = "code"
MANIFEST_KIND = "code_manifest"
MANIFEST_FORMAT = "quantrack-code/1"
STRATEGY_FILE = "strategy.yaml"
_PROJECT_MARKERS = (".git", "pyproject.toml")
_SKIPPED_TOP_LEVEL = frozenset({"quantrack", "__main__", "__future__"})
_PLAN_CACHE_SIZE = 64
# A path modified this recently may be modified again within the same timestamp tick (one
# kernel tick on Linux, 1-2 s on HFS+/FAT, more with a network filesystem's clock skew)
# without its signature changing, so a plan depending on it is not cached.
_RACY_NS = 3_000_000_000


class StrategyManifest(BaseModel):
    """The content of a ``strategy.yaml``: the files to capture, relative to its folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: tuple[str, ...]

    @field_validator("files")
    @classmethod
    def _relative(cls, files: tuple[str, ...]) -> tuple[str, ...]:
        for name in files:
            path = PurePosixPath(name.replace("\\", "/"))
            if not name.strip() or "\x00" in name:
                raise ValueError(f"file entry {name!r} is empty or holds a NUL byte")
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise ValueError(
                    f"file entry {name!r} must be a relative path inside the folder of "
                    "strategy.yaml (no absolute paths, no '..')"
                )
        return files


@dataclass(frozen=True)
class CodePlan:
    """What :func:`find_code` found: files to capture, by relative path, and what was skipped.

    ``files`` maps a relative POSIX path to the file's bytes; ``entry`` is the relative path
    of the strategy's own file; ``packages`` are top-level names of installed (non-local)
    modules the code imports; ``source`` says how the files were chosen (``imports``,
    ``strategy.yaml`` or ``source`` for code recovered from an interactive session);
    ``root`` is the folder the relative paths start from (``None`` for recovered source).

    Every call returns its own ``files`` dict (plans are cached and the cached one must not
    change), so a caller may modify the one it gets.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    entry: str | None = None
    packages: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "imports"
    root: Path | None = None


@dataclass(frozen=True)
class CapturedCode:
    """Stored code: one ``code`` artifact per file, a manifest and the code hash.

    ``root`` is the folder the files were captured from (where their git state lives).
    """

    files: dict[str, ArtifactRef]
    manifest: ArtifactRef | None
    code_hash: str | None
    packages: tuple[str, ...]
    warnings: tuple[str, ...]
    root: Path | None = None

    @property
    def refs(self) -> tuple[ArtifactRef, ...]:
        """Every artifact to list on the experiment: the manifest first, then the files."""
        head = (self.manifest,) if self.manifest is not None else ()
        return head + tuple(self.files[name] for name in sorted(self.files))


def code_hash(files: dict[str, str]) -> str:
    """sha256 of the canonical JSON of ``{relative path: content sha256}``."""
    return hashlib.sha256(canonical_json(files).encode("utf-8")).hexdigest()


def capture_code(store: ArtifactStore, target: object) -> CapturedCode:
    """Find the code behind ``target`` (see :func:`find_code`) and store it in ``store``.

    Warnings (a file that could not be read, source that could not be found) are logged
    and kept on the result; nothing here fails a run except a malformed ``strategy.yaml``
    or a ``target`` that names a missing file, which are the caller's mistakes.
    """
    plan = target if isinstance(target, CodePlan) else find_code(target)
    for warning in plan.warnings:
        _log.warning("code capture: " + warning)
    refs = {
        name: store.put(data, kind=CODE_KIND, media_type=_media_type(name), name=name)
        for name, data in sorted(plan.files.items())
    }
    if not refs:
        return CapturedCode({}, None, None, plan.packages, plan.warnings, plan.root)
    mapping = {name: ref.id for name, ref in refs.items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "entry": plan.entry,
        "source": plan.source,
        "files": mapping,
        "warnings": list(plan.warnings),
    }
    manifest_ref = store.put(
        (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode("utf-8"),
        kind=MANIFEST_KIND,
        media_type="application/json",
        name="code_manifest.json",
    )
    return CapturedCode(
        refs, manifest_ref, code_hash(mapping), plan.packages, plan.warnings, plan.root
    )


def read_manifest(store: ArtifactStore, ref: ArtifactRef | str) -> dict[str, str]:
    """``{relative path: artifact id}`` from a stored ``code_manifest`` artifact.

    Raises ValueError when the artifact is not a manifest this version understands or
    lists a path that would leave the folder it is restored into.
    """
    artifact_id = ref.id if isinstance(ref, ArtifactRef) else ref
    try:
        document = json.loads(store.get(artifact_id).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"artifact {artifact_id} is not a code manifest: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"artifact {artifact_id} is not a {MANIFEST_FORMAT} code manifest; "
            "upgrade quantrack if it was written by a newer version"
        )
    files = document.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"code manifest {artifact_id} has no 'files' mapping")
    for name in files:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"code manifest {artifact_id} lists an unsafe path {name!r}")
    return {str(name): str(value) for name, value in files.items()}


def find_code(target: object) -> CodePlan:
    """The local source files behind ``target``, without storing anything.

    ``target`` is a class or function (its defining module's file is the start), a module,
    or a path to a ``.py`` file. Raises FileNotFoundError for a path that does not exist
    and ValueError for an invalid ``strategy.yaml``.

    The plan of a file-backed target is cached while every file and folder it depended on
    keeps its ``os.stat`` signature (see the module docstring); code without a file is
    recovered anew each time.
    """
    origin = _origin(target)
    if origin is None:
        return _from_interactive(target, [])
    key = _cache_key(origin)
    if key is not None:
        with _plans_lock:
            cached = _plans.get(key)
            if cached is not None:
                _plans.move_to_end(key)
        if cached is not None and all(_signature(path) == sig for path, sig in cached.watched):
            return _copy(cached.plan)
    began = time.time_ns()
    watch = _Watch()
    start = _start(origin, watch)
    if start is None:
        return _from_interactive(target, [])
    watch(start.parent)  # its listing says whether a strategy.yaml is there
    manifest = start.parent / STRATEGY_FILE
    if manifest.is_file():
        plan = _from_strategy_file(start, manifest, [], watch)
    else:
        plan = _Analysis(start, origin.module, [], watch).run()
    if key is not None and watch.settled(began):
        with _plans_lock:
            _plans[key] = _Cached(plan, tuple(watch.seen.items()))
            _plans.move_to_end(key)
            while len(_plans) > _PLAN_CACHE_SIZE:
                _plans.popitem(last=False)
    return _copy(plan)


# -- where to start --------------------------------------------------------------------


class _Origin(NamedTuple):
    """The file a target names, as given (not resolved), and its module's name."""

    file: str
    module: str | None
    is_path: bool


def _origin(target: object) -> _Origin | None:
    """Cheap: no filesystem access, so a cache hit pays for none. ``None``: no .py file."""
    if isinstance(target, str | os.PathLike):
        return _Origin(os.fsdecode(os.fspath(target)), None, True)
    module: ModuleType | None
    if isinstance(target, ModuleType):
        module = target
    else:
        module_name = getattr(target, "__module__", None)
        if not isinstance(module_name, str):
            raise TypeError(
                f"cannot capture code from {target!r}: pass a class, a function, a module "
                "or a path to a .py file"
            )
        module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None) if module is not None else None
    if module is None or not isinstance(file, str) or not file.endswith(".py"):
        return None
    name: str | None = module.__name__
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        name = spec.name if spec is not None else None
    return _Origin(file, name, False)


def _start(origin: _Origin, watch: _Watch) -> Path | None:
    """The resolved file to start from; ``None`` when a module's file is gone."""
    watch(origin.file)  # as given: the same name may later lead to another file
    path = Path(origin.file)
    if path.is_file():
        return path.resolve()
    if origin.is_path:
        raise FileNotFoundError(
            f"cannot capture code from {path}: no such file; pass the strategy's "
            "class or function, its module, or the path of an existing .py file"
        )
    return None


# -- the plan cache --------------------------------------------------------------------

# What an os.stat says about a path's content or listing (None: it does not exist). atime
# is left out: reading a file or listing a folder may change it.
_Signature = tuple[int, int, int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a path holding a NUL byte
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


class _Watch:
    """The paths a plan depends on, each stat-ed before the analysis first consults it.

    Stat first, then read: a change after the stat changes the signature, so it is seen on
    the next call; a change before it is in what was read.
    """

    def __init__(self) -> None:
        self.seen: dict[str, _Signature] = {}
        self._sys_path = False

    def __call__(self, path: str | Path) -> None:
        key = os.fspath(path)
        if key not in self.seen:
            self.seen[key] = _signature(key)

    def sys_path(self) -> None:
        """Every ``sys.path`` folder: a module may appear in any of them."""
        if not self._sys_path:
            self._sys_path = True
            for entry in sys.path:
                if isinstance(entry, str | bytes):  # what the path finder looks at
                    self(os.fsdecode(entry) or ".")  # "": the current folder, in the key

    def settled(self, began: int) -> bool:
        """Whether no path was modified too close to ``began`` for its signature to be trusted."""
        horizon = began - _RACY_NS
        return all(sig is None or sig[0] < horizon for sig in self.seen.values())


@dataclass(frozen=True)
class _Cached:
    plan: CodePlan
    watched: tuple[tuple[str, _Signature], ...]


_plans_lock = threading.Lock()  # sweeps call find_code from several threads
_plans: OrderedDict[tuple[object, ...], _Cached] = OrderedDict()


def _cache_key(origin: _Origin) -> tuple[object, ...] | None:
    """What the analysis depends on besides the watched paths; ``None``: do not cache."""
    try:
        cwd = os.getcwd()  # relative paths and the "" entry of sys.path depend on it
    except OSError:  # the current folder was deleted
        return None
    key = (origin, cwd, tuple(sys.path))
    try:
        hash(key)
    except TypeError:  # something unhashable was put on sys.path: just do not cache
        return None
    return key


def _copy(plan: CodePlan) -> CodePlan:
    """A plan with its own ``files`` dict: what a caller does to it cannot reach the cache."""
    return CodePlan(
        files=dict(plan.files),
        entry=plan.entry,
        packages=plan.packages,
        warnings=plan.warnings,
        source=plan.source,
        root=plan.root,
    )


def _from_interactive(target: object, warnings: list[str]) -> CodePlan:
    label = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    try:
        source = inspect.getsource(target)  # type: ignore[arg-type]
    except (OSError, TypeError):
        warnings.append(
            f"the source of {label} could not be found (defined interactively without a "
            "file); the run is recorded without its code"
        )
        return CodePlan(warnings=tuple(warnings), source="source")
    name = f"{_safe_stem(str(label))}.py"
    files = {name: source.encode("utf-8")}
    module = target if isinstance(target, ModuleType) else None
    if module is None:
        module = sys.modules.get(getattr(target, "__module__", "") or "")
    packages: set[str] = set()
    if module is not None:
        # A notebook's imports live in other cells: use the modules its namespace holds.
        for value in list(vars(module).values()):
            if isinstance(value, ModuleType):
                top = value.__name__.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in _SKIPPED_TOP_LEVEL:
                    packages.add(top)
    imports = _imports_of(source.encode("utf-8"), None, None)
    packages.update(top for top in (n.split(".", 1)[0] for n, _ in imports) if _external(top))
    return CodePlan(
        files=files,
        entry=name,
        packages=tuple(sorted(packages)),
        warnings=tuple(warnings),
        source="source",
    )


def _from_strategy_file(
    start: Path, manifest: Path, warnings: list[str], watch: _Watch
) -> CodePlan:
    import yaml  # only projects with a strategy.yaml pay for the YAML parser

    watch(manifest)
    try:
        # Read once: the captured copy is the one the file list came from.
        listing = manifest.read_bytes()
        document: Any = yaml.safe_load(listing.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{manifest} is not readable YAML: {exc}") from exc
    try:
        listed = StrategyManifest.model_validate(document)
    except ValidationError as exc:
        raise ValueError(
            f"{manifest} is invalid; it must hold a 'files' list of relative paths, e.g.\n"
            f"files:\n  - signals.py\n{exc}"
        ) from exc
    root = manifest.parent
    files: dict[str, bytes] = {STRATEGY_FILE: listing}
    entry = start.relative_to(root).as_posix()
    files[entry] = start.read_bytes()
    for name in listed.files:
        relative = PurePosixPath(name.replace("\\", "/")).as_posix()
        path = root / relative
        watch(path)  # also when missing: its appearing must be seen
        try:
            files[relative] = path.read_bytes()
        except OSError as exc:
            warnings.append(f"{STRATEGY_FILE} lists {name}, which cannot be read ({exc})")
    return CodePlan(
        files=files, entry=entry, warnings=tuple(warnings), source=STRATEGY_FILE, root=root
    )


# -- import analysis -------------------------------------------------------------------


@dataclass
class _Analysis:
    start: Path
    module_name: str | None
    warnings: list[str]
    watch: _Watch

    def __post_init__(self) -> None:
        base = _import_base(self.start, self.module_name, self.watch)
        self.watch(base)  # top-level imports are looked up there first
        self.search = [str(base)]
        self.root = _project_root(self.start.parent, self.watch) or base
        self.files: dict[Path, str] = {}
        # What each visited file held when it was parsed (or why it could not be read):
        # the captured bytes are the ones whose imports were followed.
        self.sources: dict[Path, bytes | OSError] = {}
        self.packages: set[str] = set()

    def run(self) -> CodePlan:
        name = self.module_name or _module_name(self.start, Path(self.search[0]))
        self._visit(self.start, name, is_package=self.start.name == "__init__.py")
        data: dict[str, bytes] = {}
        entry: str | None = None
        for path, module in self.files.items():
            content = self.sources[path]
            if isinstance(content, OSError):
                self.warnings.append(f"cannot read {path} ({content}); left out")
                continue
            relative = self._relative(path, module)
            data[relative] = content
            if path == self.start:
                entry = relative
        return CodePlan(
            files=data,
            entry=entry,
            packages=tuple(sorted(self.packages)),
            warnings=tuple(self.warnings),
            root=self.root,
        )

    def _relative(self, path: Path, module: str) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            # Outside the project root: keep the module's own layout under a marker folder.
            tail = module.replace(".", "/") + (
                "/__init__.py" if path.name == "__init__.py" else ".py"
            )
            return f"_outside/{tail}"

    def _visit(self, path: Path, module: str | None, *, is_package: bool) -> None:
        if path in self.files:
            return
        self.files[path] = module or path.stem
        package: str | None = None
        if module:
            package = module if is_package else module.rpartition(".")[0]
        self.watch(path)
        self.watch(path.parent)
        try:
            source = path.read_bytes()
        except OSError as exc:
            self.sources[path] = exc
            self.warnings.append(f"cannot read {path} ({exc}); its imports are not followed")
            return
        self.sources[path] = source
        for dotted, _line in _cached_imports(path, source, package):
            for spec in self._resolve(dotted):
                origin = spec.origin
                if origin is None or not origin.endswith(".py"):
                    continue
                self._visit(
                    _real(origin),
                    spec.name,
                    is_package=spec.submodule_search_locations is not None,
                )

    def _resolve(self, dotted: str) -> list[ModuleSpec]:
        """Specs of the local modules importing ``dotted`` runs (packages first)."""
        parts = dotted.split(".")
        top = parts[0]
        if not top or top in sys.stdlib_module_names or top in _SKIPPED_TOP_LEVEL:
            return []
        spec = _find_top(top, self.search, self.watch)
        if spec is None:
            return []
        if not _is_local(spec):
            self.packages.add(top)
            return []
        found = [spec]
        for depth in range(1, len(parts)):
            locations = spec.submodule_search_locations
            if locations is None:
                break  # the rest names attributes of a module, not modules
            for location in locations:
                self.watch(location)
            child = importlib.machinery.PathFinder.find_spec(
                ".".join(parts[: depth + 1]), list(locations)
            )
            if child is None:
                break
            spec = child
            found.append(spec)
        return found


@functools.lru_cache(maxsize=8192)
def _real(origin: str) -> Path:
    return Path(origin).resolve()


def _find_top(name: str, search: list[str], watch: _Watch | None) -> ModuleSpec | None:
    spec = importlib.machinery.PathFinder.find_spec(name, search)
    if spec is not None:
        return spec
    if watch is not None:
        watch.sys_path()
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


@functools.cache
def _site_dirs() -> tuple[str, ...]:
    return tuple(
        str(Path(p).resolve())
        for key in ("purelib", "platlib", "stdlib", "platstdlib")
        if (p := sysconfig.get_paths().get(key))
    )


def _is_local(spec: ModuleSpec) -> bool:
    if spec.origin in (None, "built-in", "frozen"):
        locations = spec.submodule_search_locations
        if not locations:
            return False
        return all(_is_local_path(location) for location in locations)
    return bool(spec.origin) and _is_local_path(str(spec.origin))


@functools.lru_cache(maxsize=8192)
def _is_local_path(path: str) -> bool:
    # Cached: a sweep resolves the same few origins for every run, and realpath is slow.
    parts = Path(path).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    resolved = str(Path(path).resolve())
    return not any(resolved.startswith(site + os.sep) for site in _site_dirs())


def _external(top: str) -> bool:
    if not top or top in sys.stdlib_module_names or top in _SKIPPED_TOP_LEVEL:
        return False
    spec = _find_top(top, [], None)  # interactive code is not cached: nothing to watch
    return spec is not None and not _is_local(spec)


_parse_lock = threading.Lock()
_parse_cache: dict[tuple[Path, str | None], tuple[bytes, list[tuple[str, int]]]] = {}


def _cached_imports(path: Path, source: bytes, package: str | None) -> list[tuple[str, int]]:
    # A sweep captures the same files for every run: parse each version of a file once.
    key = (path, package)
    with _parse_lock:
        cached = _parse_cache.get(key)
    if cached is not None and cached[0] == source:
        return cached[1]
    imports = _imports_of(source, package, path)
    with _parse_lock:
        _parse_cache[key] = (source, imports)
    return imports


def _imports_of(source: bytes, package: str | None, path: Path | None) -> list[tuple[str, int]]:
    """Every module an import statement in ``source`` may load, as absolute dotted names."""
    try:
        tree = ast.parse(source, filename=str(path or "<source>"))
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not package:
                    # A relative import in a script: resolve against the script's folder.
                    if node.level > 1:
                        continue
                    resolved = base
                else:
                    try:
                        resolved = importlib.util.resolve_name("." * node.level + base, package)
                    except (ImportError, ValueError):
                        continue
                base = resolved
            if base:
                found.append((base, node.lineno))
            for alias in node.names:
                if alias.name != "*":
                    name = f"{base}.{alias.name}" if base else alias.name
                    found.append((name, node.lineno))
    return found


def _import_base(start: Path, module_name: str | None, watch: _Watch) -> Path:
    """The folder the start file's top-level package sits in (where ``import`` finds it)."""
    if module_name and module_name != "__main__":
        depth = module_name.count(".") + (1 if start.name == "__init__.py" else 0)
        base = start.parent
        for _ in range(depth):
            base = base.parent
        return base
    base = start.parent
    watch(base)  # an __init__.py appearing there moves the base up
    while (base / "__init__.py").is_file() and base.parent != base:
        base = base.parent
        watch(base)
    return base


def _module_name(start: Path, base: Path) -> str | None:
    try:
        parts = list(start.relative_to(base).with_suffix("").parts)
    except ValueError:
        return None
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or None


def _project_root(folder: Path, watch: _Watch) -> Path | None:
    for candidate in (folder, *folder.parents):
        watch(candidate)  # a marker appearing or vanishing there moves the root
        if any((candidate / marker).exists() for marker in _PROJECT_MARKERS):
            return candidate
    return None


def _safe_stem(label: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in label).strip("._")
    return cleaned[:100] or "source"


def _media_type(name: str) -> str:
    if name.endswith(".py"):
        return "text/x-python"
    if name.endswith((".yaml", ".yml")):
        return "application/yaml"
    return "text/plain"
