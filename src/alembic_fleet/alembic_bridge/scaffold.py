"""``fleet init``: write a fleet.toml and Alembic folders whose env.py uses the helper."""

from __future__ import annotations

import shutil
from pathlib import Path

import alembic
import tomlkit
from tomlkit.exceptions import TOMLKitError

from alembic_fleet.exceptions import ConfigError, UsageError

FLEET_TOML = """\
# alembic-fleet configuration (see "Configuration" in the alembic-fleet README).
# No URL -> fleet runs its embedded PostgreSQL (data in .fleet/, git-ignored).
database = "${DATABASE_URI:-}"
tenants = ["default"]
"""


ALEMBIC_INI = """\
# Alembic configuration of service '{name}', created by 'fleet init'.
# The database URL and the target schema come from fleet (see env.py); plain
# 'alembic' works here too: ALEMBIC_SCHEMA={example} alembic upgrade head

[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
path_separator = os

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

ENV_PY = """\
\"\"\"Alembic environment of service '{name}': fleet's helper does the work.

Replace ``target_metadata=None`` with your models' metadata (e.g. ``Base.metadata``) to use
``--autogenerate``.
\"\"\"

from alembic_fleet.env import run_migrations

run_migrations(target_metadata=None)
"""


def write_config(folder: Path) -> Path:
    """Write a starter ``fleet.toml`` in ``folder``; refuse to overwrite one."""
    path = folder / "fleet.toml"
    if path.exists():
        raise UsageError(f"{path} already exists", hint="edit it, or add a service with "
                         "'fleet init --service NAME PATH'")
    path.write_text(FLEET_TOML, encoding="utf-8")
    return path


def add_service(config_file: Path, name: str, service_dir: str, schema: str) -> list[Path]:
    """Create an Alembic folder at ``service_dir`` and register it in ``config_file``."""
    root = config_file.parent
    folder = (root / service_dir).resolve()
    try:
        document = tomlkit.parse(config_file.read_text(encoding="utf-8"))
    except TOMLKitError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(config_file)) from None
    fleet = document
    if config_file.name == "pyproject.toml":  # [tool.fleet] inside a pyproject
        fleet = document.setdefault("tool", tomlkit.table(True)).setdefault(
            "fleet", tomlkit.table(True))
    services = fleet.setdefault("services", tomlkit.table(True))
    if name in services:
        raise UsageError(f"service '{name}' is already in {config_file}")
    if (folder / "alembic.ini").exists() or (folder / "migrations").exists():
        raise UsageError(f"{folder} already holds an Alembic project",
                         hint=f"add [services.{name}] to {config_file} by hand instead")
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    example = schema.replace("{tenant}", "default")
    (folder / "alembic.ini").write_text(ALEMBIC_INI.format(name=name, example=example),
                                        encoding="utf-8")
    (folder / "migrations" / "env.py").write_text(ENV_PY.format(name=name), encoding="utf-8")
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copyfile(template, folder / "migrations" / "script.py.mako")
    (versions / ".gitkeep").touch()
    relative = folder.relative_to(root) if folder.is_relative_to(root) else folder
    entry = tomlkit.table()
    entry.add("path", relative.as_posix())
    entry.add("schema", schema)
    services.add(name, entry)
    config_file.write_text(tomlkit.dumps(document), encoding="utf-8")
    return [folder / "alembic.ini", folder / "migrations" / "env.py", config_file]
