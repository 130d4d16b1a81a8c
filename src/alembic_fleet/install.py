"""How this alembic-fleet was installed, for hints that tell where to install it again.

alembic-fleet is not on PyPI: it is installed from a checkout (``pip install -e PATH``,
``pip install PATH``), from a Git URL or from a built wheel. pip records which in the
distribution's ``direct_url.json`` (PEP 610); :func:`requirement` turns that back into an
argument for ``pip install``. With no such record (installed from a package index of your
own), or when it names a file that is no longer there (the image's venv is installed from a
wheel its build then removes), it is the version pin.
"""

from __future__ import annotations

import json
import os
import shlex
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlsplit

from alembic_fleet import __version__
from alembic_fleet.redact import mask_urls

NAME = "alembic-fleet"


def requirement(extra: str | None = None) -> str:
    """``pip install`` arguments that install this alembic-fleet (with ``extra``) again,
    quoted for a shell: ``-e '/path/to/alembic-fleet[embedded]'``, ``'alembic-fleet @
    git+https://host/alembic-fleet@COMMIT'``, ``'alembic-fleet[embedded]==0.1.0'``."""
    extras = f"[{extra}]" if extra else ""
    direct = _direct_url()
    url = direct.get("url") if direct else None
    if isinstance(url, str) and url:
        url = mask_urls(url)  # pip drops credentials (PEP 610); never print one anyway
        parts = urlsplit(url)
        if parts.scheme == "file" and not os.path.exists(unquote(parts.path)):
            # Built and removed (the image's wheel): the version is all that is left to name.
            return shlex.quote(f"{NAME}{extras}=={__version__}")
        if isinstance(direct.get("dir_info"), dict) and parts.scheme == "file":
            target = shlex.quote(unquote(parts.path) + extras)
            return f"-e {target}" if direct["dir_info"].get("editable") else target
        vcs = direct.get("vcs_info")
        if isinstance(vcs, dict) and vcs.get("vcs"):
            revision = vcs.get("commit_id") or vcs.get("requested_revision")
            url = f"{vcs['vcs']}+{url}" + (f"@{revision}" if revision else "")
        if isinstance(direct.get("subdirectory"), str):
            url += f"#subdirectory={direct['subdirectory']}"
        return shlex.quote(f"{NAME}{extras} @ {url}")
    return shlex.quote(f"{NAME}{extras}=={__version__}")


def _direct_url() -> dict[str, Any] | None:
    try:
        text = metadata.Distribution.from_name(NAME).read_text("direct_url.json")
        found = json.loads(text) if text else None
    except (metadata.PackageNotFoundError, ValueError, OSError):
        return None
    return found if isinstance(found, dict) else None


def pinned(where: str) -> str:
    """``alembic-fleet==VERSION WHERE``, and how this fleet was installed when pip recorded
    it: ``alembic-fleet==0.1.0 there (as this fleet was installed: pip install -e /path)``."""
    pin = f"{NAME}=={__version__} {where}"
    if _direct_url() is None:
        return pin
    return f"{pin} (as this fleet was installed: pip install {requirement()})"
