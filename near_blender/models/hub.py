"""Find checkpoint files: a local stem first, then the Hugging Face Hub (``org/repo/path/stem``).

Environment is read at call time (not at import): ``HF_HUB_OFFLINE`` (1 = cache only),
``HF_HUB_CACHE`` / ``HF_HOME`` (cache location; an explicit ``cache_dir`` wins). Hub failures
become :class:`near_blender.NearError` messages that say what is missing and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .. import NearError

WEIGHT_SUFFIXES = (".safetensors", ".pt")
PIPELINE_FILES = ("pipeline.json", "pipeline.yaml", "pipeline.yml")
_TRUE = {"1", "on", "yes", "true"}


# Per call (per thread) offline mode: (offline, why, how to allow downloads), set by ``offline_mode``.
_OFFLINE: ContextVar[tuple[bool, str, str] | None] = ContextVar("near_hub_offline", default=None)


def bundled_model_folder() -> Path:
    """The default model shipped inside the ``near_blender`` package (``weights/near-default``, a
    ``from_pretrained`` folder; it may be absent in a stripped install)."""
    return Path(__file__).resolve().parents[1] / "weights" / "near-default"


@contextmanager
def offline_mode(offline: bool, why: str = "", allow: str = "") -> Iterator[None]:
    """Hub access inside the block: cache only when ``offline`` (whatever ``HF_HUB_OFFLINE`` says),
    for this thread only -- no process-wide environment variable. ``why`` / ``allow`` word the error
    (e.g. Blender's online access is off / where to turn it on)."""
    token = _OFFLINE.set((offline, why, allow))
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def hub_offline() -> bool:
    """True when downloads are off: :func:`offline_mode` in this thread, else ``HF_HUB_OFFLINE``
    (checked now, so tests and users can flip it at run time)."""
    override = _OFFLINE.get()
    if override is not None:
        return override[0]
    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().lower() in _TRUE
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return True


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The Hub cache folder: ``cache_dir``, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else default."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def split_hub_path(path: str, min_parts: int = 3) -> tuple[str, str]:
    """``"org/repo/a/b"`` -> ``("org/repo", "a/b")``; NearError if it cannot be a Hub path."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    if (
        len(parts) < min_parts
        or str(path).startswith(("/", ".", "~"))
        or any(p in (".", "..") for p in parts)
        or ":" in parts[0]
    ):
        raise NearError(f"{path!r} is neither an existing local checkpoint nor a Hub path 'org/repo/...'.")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """``hf_hub_download`` honouring ``HF_HUB_OFFLINE`` at call time, with actionable errors."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    where = f"{repo_id}/{filename}" + (f" (revision {revision})" if revision else "")
    cache = hub_cache_dir(cache_dir)
    if offline:  # the cache only, read from disk: hf_hub_download would still make requests of its own
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return Path(found)
        raise _not_cached(where, repo_id, cache)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache,
                local_files_only=offline,
                etag_timeout=10,
            )
        )
    except hf_errors.LocalEntryNotFoundError as e:
        cache_txt = cache or "the default Hugging Face cache"
        raise NearError(
            f"Could not reach the Hugging Face Hub for {where} and it is not cached in {cache_txt}. "
            "Fix: check the network (or a proxy), or download the files elsewhere and pass a local folder."
        ) from e
    except hf_errors.RepositoryNotFoundError as e:
        raise NearError(
            f"Hub repository {repo_id!r} was not found (or is private / gated). Fix: check the name, "
            "log in with `hf auth login` if it is private, or pass a local folder."
        ) from e
    except hf_errors.RevisionNotFoundError as e:
        raise NearError(f"Revision {revision!r} does not exist in Hub repository {repo_id!r}.") from e
    except hf_errors.EntryNotFoundError as e:
        raise NearError(f"File {filename!r} does not exist in Hub repository {repo_id!r}.") from e
    except hf_errors.HfHubHTTPError as e:
        raise NearError(f"Hugging Face Hub error while fetching {where}: {e}") from e


def _not_cached(where: str, repo_id: str, cache: str | None) -> NearError:
    override = _OFFLINE.get()
    why, allow = (override[1], override[2]) if override and override[1] else (
        "the network is off (HF_HUB_OFFLINE=1)", "set HF_HUB_OFFLINE=0 to let it download")  # fmt: skip
    return NearError(
        f"{where} is not in the local Hugging Face cache ({cache or 'the default Hugging Face cache'}) and {why}. "
        f"Fix: {allow}, or download it first (`hf download {repo_id}`), or pass a local folder that contains "
        "the files."
    )


def _local_weights(stem: Path) -> Path | None:
    for suf in WEIGHT_SUFFIXES:
        p = stem.with_name(stem.name + suf)
        if p.is_file():
            return p
    return None


def resolve_model_files(
    path: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    check_config: Callable[[Path], None] | None = None,
) -> tuple[Path, Path]:
    """``(config.json, weights)`` for a checkpoint stem: local ``<stem>.json`` + ``<stem>.safetensors|.pt``,
    else ``org/repo/<path-in-repo>`` on the Hub (safetensors preferred, ``.pt`` fallback)."""
    stem = Path(path)
    cfg = stem.with_name(stem.name + ".json")
    if cfg.is_file():
        if check_config is not None:
            check_config(cfg)
        weights = _local_weights(stem)
        if weights is None:
            raise NearError(
                f"Checkpoint config {cfg} has no weights beside it: "
                f"expected {stem.name}.safetensors or {stem.name}.pt."
            )
        return cfg, weights
    if stem.exists() or str(path).startswith(("/", ".", "~")):
        raise NearError(
            f"No checkpoint at {path}: expected {stem.name}.json with "
            f"{stem.name}.safetensors (or .pt) beside it."
        )
    repo_id, sub = split_hub_path(str(path))
    cfg_path = hub_download(repo_id, f"{sub}.json", revision, cache_dir)
    if check_config is not None:  # e.g. reject an unknown class before downloading its weights
        check_config(cfg_path)
    try:
        weights_path = hub_download(repo_id, f"{sub}.safetensors", revision, cache_dir)
    except NearError as first:
        try:
            weights_path = hub_download(repo_id, f"{sub}.pt", revision, cache_dir)
        except NearError:
            raise first from None
    return cfg_path, weights_path


def resolve_pipeline_file(
    path: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, str | None]:
    """The pipeline file of a local folder or Hub repo ``org/repo``: ``(file, repo_id or None)``."""
    p = Path(path)
    if p.is_file() and p.name in PIPELINE_FILES:
        return p, None
    if p.is_dir():
        for name in PIPELINE_FILES:
            if (p / name).is_file():
                return p / name, None
        raise NearError(f"{p} has no pipeline file ({' or '.join(PIPELINE_FILES[:2])}).")
    repo_id, sub = split_hub_path(str(path), min_parts=2)
    prefix = f"{sub}/" if sub else ""
    try:
        return _hub_pipeline_file(repo_id, prefix, revision, cache_dir)
    except NearError as e:  # a mistyped local folder looks like "org/repo": say both readings
        raise NearError(f"No local folder {p.resolve()}, and as a Hub repository: {e}") from None


def _hub_pipeline_file(
    repo_id: str, prefix: str, revision: str | None, cache_dir: str | os.PathLike[str] | None
) -> tuple[Path, str]:
    first: NearError | None = None
    for name in PIPELINE_FILES[:2]:
        try:
            return hub_download(repo_id, prefix + name, revision, cache_dir), repo_id
        except NearError as e:
            if "does not exist in Hub repository" not in str(e) and "is not in the local" not in str(e):
                raise
            first = first or e
    assert first is not None
    raise first
