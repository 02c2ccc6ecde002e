"""Where a model's files are: inside its own folder, and nowhere else.

A manifest names its files (``artifact``, a tokenizer) relative to the version folder. The
name must be relative and free of ``..``; once symlinks are resolved the file must lie in
the version folder or the model's folder (a version may share a file with its siblings
through a symlink; never one outside). The version folder itself may be a link placed by
whoever lays out the repository. Errors name the file as the manifest wrote it, the model
and the version, never a path on the host.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from modelgate.errors import invalid

if TYPE_CHECKING:
    from modelgate.core.serving.ports import VersionSource

__all__ = ["artifact_path", "check_relative"]


def check_relative(name: str, what: str = "artifact") -> str:
    """``name`` when it is a plain relative path; INVALID_ARGUMENT otherwise."""
    posix = PurePosixPath(name)
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or posix.is_absolute()
        or PureWindowsPath(name).drive
        or ".." in posix.parts
    ):
        raise invalid(
            f"{what} {name!r} must be a relative path inside the model's folder "
            "(no absolute path, no '..')"
        )
    return name


def artifact_path(
    source: VersionSource, name: str, what: str = "artifact", *, shared: bool = False
) -> str:
    """The file ``name`` of a version, looked up in its version folder (then, when
    ``shared``, in its model's folder); INVALID_ARGUMENT when it is missing or resolves
    outside both folders."""
    check_relative(name, what)
    version = Path(source.path).resolve()
    model = Path(source.path).parent.resolve()
    where = f"model '{source.manifest.name}' version {source.version}"
    folders = [Path(source.path)]
    if shared:
        folders.append(Path(source.path).parent)
    for folder in folders:
        candidate = folder / name
        try:
            if not candidate.exists() and not candidate.is_symlink():
                continue
            resolved = candidate.resolve()
        except (OSError, RuntimeError):  # a symlink loop; their messages name host paths
            raise invalid(f"{what} {name!r} of {where} cannot be resolved") from None
        if not (resolved.is_relative_to(version) or resolved.is_relative_to(model)):
            raise invalid(f"{what} {name!r} of {where} points outside the model's folder")
        if resolved.is_file():
            return str(resolved)
    raise invalid(f"{what} {name!r} not found in {where}")
