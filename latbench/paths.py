"""Where device profiles, tables and predictors live.

Lookup order for a name: an explicit path, ``$LATBENCH_HOME/<kind>``, the repo
checkout's ``<kind>/`` folder, the copy shipped inside an installed wheel
(``latbench/_data/<kind>``), then the per-user data dir
(``$XDG_DATA_HOME/latbench/<kind>``). New files are written to
``$LATBENCH_HOME`` when it is set, else to the checkout, else to the user dir.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("devices", "tables", "predictors", "datasets")
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _checkout() -> Path | None:
    return REPO_DIR if (REPO_DIR / "pyproject.toml").exists() else None


def user_dir(kind: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "latbench" / kind


def search_dirs(kind: str) -> list[Path]:
    """Folders searched for ``kind`` data, first match wins."""
    assert kind in KINDS, kind
    dirs: list[Path] = []
    home = os.environ.get("LATBENCH_HOME")
    if home:
        dirs.append(Path(home) / kind)
    checkout = _checkout()
    if checkout is not None:
        dirs.append(checkout / kind)
    dirs.append(PACKAGE_DIR / "_data" / kind)
    dirs.append(user_dir(kind))
    return dirs


def write_dir(kind: str) -> Path:
    """Where new ``kind`` data is written."""
    home = os.environ.get("LATBENCH_HOME")
    if home:
        return Path(home) / kind
    checkout = _checkout()
    if checkout is not None:
        return checkout / kind
    return user_dir(kind)


def find(kind: str, relative: str | os.PathLike[str]) -> Path | None:
    """The first existing ``<dir>/<relative>`` over :func:`search_dirs`, or an existing explicit path."""
    p = Path(relative)
    if p.exists():
        return p
    for d in search_dirs(kind):
        candidate = d / p
        if candidate.exists():
            return candidate
    return None


def listing(kind: str, pattern: str) -> list[Path]:
    """Every file matching ``pattern`` over the search dirs (first occurrence of a relative path wins)."""
    seen: dict[str, Path] = {}
    for d in search_dirs(kind):
        if d.is_dir():
            for f in sorted(d.glob(pattern)):
                seen.setdefault(str(f.relative_to(d)), f)
    return list(seen.values())


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, what: str = "name") -> str:
    """A user-given name that becomes a file or folder name (device, run id): letters, digits, ``.``, ``_``, ``-``,
    starting with a letter or digit, at most 128 characters. Refuses ``..``, separators, absolute paths, newlines."""
    from latbench.errors import LatbenchError

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise LatbenchError(
            f"bad {what} {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit, "
            "no '..', at most 128 characters)"
        )
    return name


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (a folder) if needed and check a file can be written there, before long work starts.

    Raises :class:`~latbench.errors.LatbenchError` naming the folder when it cannot be created or written.
    """
    from latbench.errors import LatbenchError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".latbench-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LatbenchError(f"cannot write into {path}: {exc.strerror or exc}; give a writable folder") from None
    return path


def check_writable_target(path: str | os.PathLike[str]) -> Path:
    """Refuse a target that an atomic write would replace rather than write: a symlink, a device,
    a FIFO, a directory. Returns the path. Raises :class:`~latbench.errors.LatbenchError`."""
    from latbench.errors import LatbenchError

    path = Path(path)
    if path.is_symlink():
        raise LatbenchError(f"{path} is a symbolic link; give the path of a regular file")
    if path.exists() and not path.is_file():
        raise LatbenchError(f"{path} exists and is not a regular file; give another path")
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old or the new file, never a torn one.

    Write to a temporary file beside it, fsync, give it the permissions a plain
    ``open`` would (mkstemp makes 0600), then rename over ``path``. A symlink or
    a non-regular file at ``path`` is refused, never replaced.
    """
    path = check_writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")
