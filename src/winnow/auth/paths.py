"""Which server paths a key may name (``prompts_path``, ``dataset_path``).

Client paths resolve (symlinks included) inside the data dir or the operator's ``data_roots``
(``resolve_inside``). Inside the data dir, what Winnow itself writes is owned:
``files/<key id>/`` holds a key's uploads and ``jobs/<job id>/`` a job's outputs and work folders,
so a key may name only its own; ``models/`` (fine-tuned weights and adapters, whoever made them) and
any other folder of Winnow's are not input, and the database and Winnow's own state files may not be
named at all. Other files an operator puts in the data dir, and the ``data_roots``, are shared by
every key. Admin keys may name anything inside the roots but Winnow's own state.

A refused path gets one answer whether or not it exists, so the answer tells nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from winnow.auth.keys import Principal
from winnow.config import Settings
from winnow.errors import InvalidRequest

# Winnow's own state in the data dir (the SQLite database and its journals, worker settings).
_STATE_PREFIXES = ("winnow.db", "worker-config")
# Folders Winnow writes that hold no key's input: a fine-tuned model's files are not training data.
_PRIVATE_FOLDERS = ("models",)


def resolve_inside(path: str, roots: list[Path], field: str = "prompts_path") -> Path:
    """``path`` (relative to the first root, or absolute) resolved with symlinks, if inside a root."""
    if "\x00" in path:  # the OS refuses such a name; say so instead of failing on it
        raise InvalidRequest(f"{field} contains a NUL character", repr(path))
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    raise InvalidRequest(
        f"{field} is outside the allowed data directories",
        f"{path!r} resolves outside {', '.join(str(r) for r in roots)}",
    )


def authorize_client_path(
    raw: str, settings: Settings, owner: Principal, job_owner: Callable[[str], int | None], field: str
) -> Path:
    """``raw`` resolved inside the roots, or InvalidRequest unless ``owner`` may read it. Call it
    before the file is opened, so a refused file's contents (even its row count) stay unread."""
    path = resolve_inside(raw, settings.effective_data_roots, field)
    check_owned_path(path, settings.data_dir, owner, job_owner, field)
    return path


def check_owned_path(
    path: Path, data_dir: Path, owner: Principal, job_owner: Callable[[str], int | None], field: str
) -> None:
    """InvalidRequest unless ``owner`` may read ``path`` (already resolved inside the roots)."""
    data_dir = data_dir.resolve()
    if not path.is_relative_to(data_dir):
        return  # an operator's shared data root
    parts = path.relative_to(data_dir).parts
    if not parts or parts[0].startswith(_STATE_PREFIXES):
        raise _refused(field, path)
    if owner.is_admin:
        return
    if parts[0] in _PRIVATE_FOLDERS:
        raise _refused(field, path)
    if parts[0] == "files" and (len(parts) < 3 or parts[1] != str(owner.id)):
        raise _refused(field, path)
    if parts[0] == "jobs" and (len(parts) < 3 or job_owner(parts[1]) != owner.id):
        raise _refused(field, path)


def _refused(field: str, path: Path) -> InvalidRequest:
    return InvalidRequest(
        f"{field} names a file this key may not read",
        f"{str(path)!r}: uploads and job outputs belong to the key that made them; use one of your own",
    )
