"""Load each service's Alembic scripts once and expose them as a pure RevisionGraph.

Alembic itself is imported only when something needs it: a graph read before from the same
files comes from :mod:`.graph_cache`, so commands that run no revision never load it.

Alembic resolves a relative ``script_location`` and ``prepend_sys_path`` against the working
directory, which is the service folder when people run plain ``alembic`` there. fleet runs
from anywhere, so both are resolved against the folder of the service's alembic.ini instead.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_fleet.alembic_bridge import graph_cache
from alembic_fleet.alembic_bridge.replay import SAFE_OPTIONS, Replayer, ReplayPlan
from alembic_fleet.exceptions import ConfigError, RevisionError
from alembic_fleet.model.identifiers import unsafe_revision_id
from alembic_fleet.model.revisions import Revision, RevisionGraph
from alembic_fleet.model.targets import Service
from alembic_fleet.redact import scrub

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


def _absolute(value: str, base: Path) -> str:
    """Resolve ``value`` against ``base`` unless it is absolute or a package resource."""
    if ":" in value and not os.path.isabs(value) and value[1:3] != ":\\":
        return value  # "package:folder" form
    return value if os.path.isabs(value) else str((base / value).resolve())


def make_config(service: Service, *, output: io.StringIO | None = None) -> Config:
    """An Alembic Config for ``service`` whose paths do not depend on the working directory."""
    from alembic.config import Config

    ini = service.ini_path
    config = Config(str(ini), output_buffer=output, stdout=output or sys.stderr)
    location = config.get_main_option("script_location")
    if not location:
        raise ConfigError("has no script_location", file=str(ini),
                          expected="script_location = %(here)s/migrations")
    config.set_main_option("script_location", _absolute(location, ini.parent).replace("%", "%%"))
    prepend = config.get_main_option("prepend_sys_path")
    if prepend:
        separator = config.get_main_option("path_separator") or None
        parts = prepend.split(separator) if separator and separator != "os" else prepend.split()
        if separator == "os":
            parts = prepend.split(os.pathsep)
        resolved = [_absolute(p.strip(), ini.parent) for p in parts if p.strip()]
        config.set_main_option("path_separator", "os")
        config.set_main_option("prepend_sys_path", os.pathsep.join(resolved).replace("%", "%%"))
    return config


@dataclass
class ServiceScripts:
    """One service's ScriptDirectory, loaded once per process, and its pure graph."""

    service: Service
    _script: ScriptDirectory | None = field(default=None, repr=False)
    _loaded: bool = field(default=False, repr=False)

    @property
    def directory(self) -> ScriptDirectory:
        """The ScriptDirectory as configured; its revision files are not loaded by this."""
        if self._script is None:
            from alembic.script import ScriptDirectory
            from alembic.util import CommandError

            from alembic_fleet.alembic_bridge.runner import isolate_imports

            isolate_imports(self, code=False)  # prepend_sys_path goes to this service
            try:
                self._script = ScriptDirectory.from_config(make_config(self.service))
            except CommandError as exc:
                raise ConfigError(str(exc), file=str(self.service.ini_path),
                                  key="script_location") from None
        return self._script

    @property
    def script(self) -> ScriptDirectory:
        """The ScriptDirectory with every revision file loaded as plain alembic loads them:
        when a revision's import fails, after what env.py adds to ``sys.path`` (a graph
        from :mod:`.graph_cache` loaded none of them; whoever asks for this runs them)."""
        if self.service.python is None and not self._loaded:
            self._load_revisions()
        return self.directory

    def _load_revisions(self) -> None:
        from alembic.util import CommandError

        from alembic_fleet.alembic_bridge.runner import isolate_imports, run_path_setup

        isolate_imports(self)  # the service folder first on sys.path, as a cwd would be
        try:
            try:
                _ = self.directory.revision_map.heads  # executes every revision file
            except ImportError:
                # Plain alembic runs env.py before it loads a revision, so a sys.path.insert
                # at the top of env.py applies to the revisions' imports: do the same.
                if not run_path_setup(self):
                    raise
                self._script = None  # loaded again, with what env.py added to the path
                _ = self.directory.revision_map.heads
        except CommandError as exc:
            raise RevisionError(f"service '{self.service.name}': {exc}",
                                hint=f"fix the revision files under {self.script_dir}"
                                ) from None
        except Exception as exc:  # a revision file that cannot even be imported
            raise self._load_error(exc) from None
        self._loaded = True

    @cached_property
    def uses_helper(self) -> bool:
        """True when the service's env.py calls fleet's helper (the fast, in-process path).

        Any other env.py is run as plain ``alembic`` subprocesses, one per target, with
        ``ALEMBIC_SCHEMA`` and ``DATABASE_URI`` set (the legacy mode).
        """
        env_py = self.script_dir / "env.py"
        try:
            return "alembic_fleet" in env_py.read_text(encoding="utf-8")
        except OSError:
            return False

    @cached_property
    def replayer(self) -> Replayer | None:
        """The service's replayer, when its revisions may be rendered once and replayed.

        Only for env.py files that use the helper without options that change how an
        upgrade runs (see :mod:`alembic_fleet.alembic_bridge.replay`).
        """
        if not self.uses_helper:
            return None
        from alembic_fleet.alembic_bridge.runner import probe_options

        try:
            options = probe_options(self)
        except Exception:  # an env.py we cannot probe runs online, where errors surface
            return None
        if not set(options) <= SAFE_OPTIONS:
            return None
        return Replayer.for_service(self.service, options.get("target_metadata"))

    def replay_plan(self, current: tuple[str, ...], destination: str) -> ReplayPlan | None:
        """The rendered statements from ``current`` to ``destination``, or None when the
        upgrade must run through Alembic online (see :mod:`.replay`)."""
        replayer = self.replayer
        return replayer.plan(self.script, current, destination) if replayer else None

    def replay(self, connection: Any, schema: str, plan: ReplayPlan, *, table_exists: bool,
               listener: Any = None, before_statement: Any = None) -> None:
        """Apply a replay plan to ``schema`` in one transaction; a mixed plan's online
        revisions run through Alembic, at their place, in that transaction, the env.py
        run once for the whole plan."""
        replayer = self.replayer
        assert replayer is not None
        if not plan.mixed:
            replayer.run(connection, schema, plan, table_exists=table_exists,
                         listener=listener, before_statement=before_statement)
            return
        from alembic_fleet.alembic_bridge import runner

        def drive(online: Any) -> None:
            replayer.apply(connection, schema, plan, table_exists, listener,
                           before_statement, online)

        runner.upgrade_mixed(self, connection, schema, plan.destination, drive, listener)

    def prepare(self, currents: Iterable[tuple[str, ...]], destination: str) -> None:
        """Load everything a worker needs (graph, env.py probe, rendered revisions) in this
        process, so that forked workers inherit it instead of each doing it again."""
        _ = self.graph, self.uses_helper
        for current in currents:
            self.replay_plan(current, destination)

    @cached_property
    def script_dir(self) -> Path:
        """The service's migrations folder (``script_location``, made absolute), where its
        env.py and script.py.mako live."""
        return Path(self.directory.dir)

    @cached_property
    def version_dirs(self) -> list[Path]:
        """The folders Alembic reads revision files from, absolute, in configured order:
        ``version_locations`` (``package:folder`` resources resolved), else
        ``<script_location>/versions``. A folder may not exist yet."""
        from alembic.util import coerce_resource_to_filename

        script = self.directory
        if script.version_locations:
            return [Path(coerce_resource_to_filename(location)).absolute()
                    for location in script.version_locations]
        return [Path(script.dir, "versions").absolute()]

    @cached_property
    def graph(self) -> RevisionGraph:
        """The revision graph; a broken graph (unknown parent, cycle) is a RevisionError.

        Revisions are declared in the order Alembic loads the files, so that the graph's
        heads come in the order ``alembic heads`` lists them.
        """
        service = self.service
        kept = graph_cache.load(service.ini_path, service.python, service.path)
        if kept is not None:  # the same files as a reading before: no Alembic needed
            self.__dict__["script_dir"] = kept.script_dir
            self.__dict__["version_dirs"] = list(kept.version_dirs)
            return RevisionGraph.from_revisions(kept.revisions)
        digest, entry = self._fingerprint()
        declared = self._read()
        for revision in declared:
            for unsafe in (i for i in (revision.id, *revision.down) if unsafe_revision_id(i)):
                raise RevisionError(
                    f"service '{self.service.name}': {_shown(revision.path)}: revision id "
                    f"{unsafe!r} holds characters Alembic would write into SQL unescaped",
                    hint="use letters, digits, '_' and '.' only (fleet check: FC108)")
        ordered = (tuple(declared) if service.python is not None  # ordered there already
                   else tuple(sorted(declared, key=self._load_order)))
        # Kept only when each revision's ids are literals of its own file's bytes.
        if entry is not None and graph_cache.declared_in_files(ordered):
            graph_cache.save(service.ini_path, service.python, digest,
                             replace(entry, revisions=ordered))
        return RevisionGraph.from_revisions(ordered)

    def _fingerprint(self) -> tuple[str | None, graph_cache.Entry | None]:
        """The digest of what a reading is about to use, taken before it, and the entry it
        would be kept as (its revisions still to come). Folders that cannot be resolved
        here (a ``package:folder`` of a package only a service's own interpreter has) mean
        the reading is not kept; when the reading itself fails, it says why."""
        service = self.service
        try:
            folders = (self.script_dir, tuple(self.version_dirs))
            checks = self._cache_checks()
        except Exception:
            return None, None
        digest = graph_cache.fingerprint(service.ini_path, service.python, *folders, checks,
                                         service.path)
        return digest, graph_cache.Entry(*folders, (), checks or ())

    def _cache_checks(self) -> tuple[tuple[str, ...], ...] | None:
        """What besides the files decided which folders this reading used (see
        :func:`.graph_cache.checks_for`), from the locations as the alembic.ini writes them."""
        from alembic.config import Config

        written = Config(str(self.service.ini_path)).get_main_option("script_location") or ""
        return graph_cache.checks_for(self.service.ini_path, written, self.script_dir,
                                      self.directory.version_locations)

    def _read(self) -> list[Revision]:
        """The revisions as Alembic loads them (or the service's own interpreter does)."""
        if self.service.python is not None:  # read by the service's own interpreter
            from alembic_fleet import interpreters

            return list(interpreters.describe(self.service))
        from alembic.util import CommandError

        script = self.script
        try:
            return self._declared(script)
        except CommandError as exc:
            raise RevisionError(f"service '{self.service.name}': {exc}",
                                hint=f"fix the revision files under {script.dir}") from None
        except Exception as exc:  # a revision file that cannot even be imported
            raise self._load_error(exc) from None

    @staticmethod
    def _declared(script: ScriptDirectory) -> list[Revision]:
        """Every revision file's declaration, in the order Alembic loads them."""
        from alembic.util import to_tuple

        return [
            Revision(
                id=sc.revision,
                down=to_tuple(sc.down_revision, default=()),
                message=(sc.doc or "").strip(),
                path=sc.path,
                branch_labels=tuple(sorted(sc.branch_labels or ())),
                # Dependencies may name branch labels or partial ids; Alembic resolved
                # them to ids, which are what it lists after the down revisions.
                depends_on=tuple(rid for rid in sc._all_down_revisions
                                 if rid not in to_tuple(sc.down_revision, default=())),
            )
            for sc in script.walk_revisions()
        ]

    def _load_error(self, exc: BaseException) -> RevisionError:
        """Which revision file failed to load, and why: exit 2, naming the service, the
        file and the error (a syntax error, a missing module) instead of a traceback."""
        path = getattr(exc, "filename", None) if isinstance(exc, SyntaxError) else None
        if path is None:
            folders = [str(folder) for folder in self.version_dirs]
            frames = traceback.extract_tb(exc.__traceback__)
            path = next((f.filename for f in reversed(frames)
                         if any(f.filename.startswith(d) for d in folders)), None)
        where = _shown(path) if path else "a revision file"
        what = scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        hint = (f"make {missing or 'the module'!r} importable as plain alembic run in "
                f"{_shown(self.service.path)} would find it: list its folder in "
                "prepend_sys_path in alembic.ini (relative to the service folder), add it to "
                "sys.path at the top of env.py, or install it in the service's environment "
                "(the 'python' key of the service picks that interpreter)"
                if isinstance(exc, ImportError)
                else f"fix the file; 'fleet check {self.service.name}' lists every problem")
        return RevisionError(f"service '{self.service.name}': cannot load {where}: {what}",
                             hint=hint)

    def _load_order(self, revision: Revision) -> tuple[int, tuple[str, ...], str]:
        """Where Alembic's loader meets the file: version folder, then subfolders top-down
        (files of a folder before its subfolders), then file name."""
        path = Path(revision.path).absolute()
        for index, folder in enumerate(self.version_dirs):
            if path.is_relative_to(folder):
                parts = path.relative_to(folder).parts
                return index, parts[:-1], parts[-1]
        return len(self.version_dirs), path.parts[:-1], path.name

    def resolve(self, revision: str) -> tuple[str, ...]:
        """An absolute destination: ``head``/``heads`` or a (partial) revision id."""
        if revision in ("head", "heads"):
            return self.graph.heads
        if self.service.python is not None:  # Alembic's resolution, in the service's Python
            from alembic_fleet import interpreters

            return tuple(interpreters.call(self.service, "alembic_fleet.remote:resolve",
                                           self.service, revision))
        from alembic.util import CommandError

        try:
            found = self.script.get_revisions(revision)
        except CommandError as exc:
            raise RevisionError(f"service '{self.service.name}': {exc}",
                                hint=f"see 'fleet history {self.service.name}'") from None
        ids = tuple(sc.revision for sc in found if sc is not None)
        if not ids:
            raise RevisionError(f"service '{self.service.name}': unknown revision {revision!r}",
                                hint=f"see 'fleet history {self.service.name}'")
        return ids


def _shown(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative
