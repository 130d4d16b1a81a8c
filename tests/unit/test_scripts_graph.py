"""ServiceScripts hands out plain data: the one RevisionGraph and the version folders.

Alembic reads the files here (no database): the graph built from its ScriptDirectory must
agree with Alembic on heads (in Alembic's order) and ancestors, and with the lint's reader.
"""

from __future__ import annotations

from pathlib import Path

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.check.scripts_lint import lint_service
from alembic_fleet.model.targets import Database, Service


def write(folder: Path, name: str, rev: str, down: str | None, *,
          labels: tuple[str, ...] | None = None, depends: object = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = {labels!r}\n"
        f"depends_on = {depends!r}\n\ndef upgrade():\n    pass\n\n"
        "def downgrade():\n    op.drop_table('t')\n", encoding="utf-8")


def service(tmp_path: Path) -> ServiceScripts:
    """Two version folders (one with a subfolder), three heads, a dependency on a label."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\npath_separator = space\n"
        "version_locations = %(here)s/one %(here)s/two\nrecursive_version_locations = true\n",
        encoding="utf-8")
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, "z_base.py", "base1", None, labels=("core",))
    write(one / "sub", "a_x.py", "x1", "base1")
    write(one, "m_y.py", "y1", "base1")
    write(two, "b_other.py", "o1", None, labels=("other",))
    write(two, "c_other.py", "o2", "o1", depends="core")
    write(one, "n_dep.py", "d1", "x1", depends=("other", "y1"))
    return ServiceScripts(Service("svc", tmp_path, "public", Database(embedded_name="x")))


def test_version_dirs_are_the_configured_folders(tmp_path: Path) -> None:
    scripts = service(tmp_path)
    assert scripts.version_dirs == [tmp_path / "one", tmp_path / "two"]
    assert scripts.script_dir == (tmp_path / "migrations").resolve()


def test_graph_agrees_with_alembic(tmp_path: Path) -> None:
    scripts = service(tmp_path)
    graph = scripts.graph
    assert graph.heads == tuple(scripts.script.get_heads()) == ("y1", "d1", "o2")
    assert graph.revisions["d1"].down == ("x1",)
    assert graph.revisions["d1"].depends_on == ("o1", "y1")
    assert graph.revisions["o2"].depends_on == ("base1",)  # the label, resolved by Alembic
    assert graph.ancestors(["d1"]) == {"d1", "x1", "base1", "o1", "y1"}
    assert graph.ancestors(["o2"]) == {"o2", "o1", "base1"}
    assert not graph.is_linear


def test_the_lint_sees_the_same_heads(tmp_path: Path) -> None:
    scripts = service(tmp_path)
    findings = lint_service("svc", scripts.version_dirs)
    assert [f.code for f in findings] == ["FC102"] * 3
    assert findings[0].details == tuple(sorted(scripts.graph.heads))
    assert "fleet would upgrade to all of them" in findings[0].message
