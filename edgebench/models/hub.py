"""Models by Hugging Face name: ``hf://ORG/REPO[:QUANT | /FILE.gguf | /SUBFOLDER]`` and the short
``ORG/REPO:QUANT`` form of llama.cpp's ``-hf``, resolved to a file in the local Hugging Face cache.

The local cache comes first (its documented layout: ``models--ORG--REPO/refs/main`` names the
snapshot, ``snapshots/<revision>/<file>`` links to ``blobs/``), so a cached model needs no network
at all. Only a file the cache lacks is downloaded (huggingface_hub's own progress bar), and never
when ``HF_HUB_OFFLINE`` is set. A GGUF is chosen by its quant level, read from the file name the
way llama.cpp's tags are (a repo holding one GGUF needs no level; with several and none asked,
Q4_K_M as llama.cpp defaults); an ONNX model is a folder holding ``genai_config.json``.

huggingface_hub is imported inside the functions that use it: a run on plain files never loads it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgebench.errors import InputError

PREFIX = "hf://"
DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's -hf default tag
GENAI_CONFIG = "genai_config.json"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SHORT = re.compile(rf"^({_PART})/({_PART}):([A-Za-z0-9_.-]+)$")  # ORG/REPO:QUANT (llama.cpp -hf)
_QUANT_IN_NAME = re.compile(r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|MXFP4(?:_MOE)?)(?=$|[-_.])", re.I)
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)


@dataclass(frozen=True)
class HubModel:
    """A resolved hub model: ``path`` on disk (in the cache), ``repo`` ("ORG/REPO"), the
    ``revision`` (commit hash) it came from and ``file``, its path inside the repo (a folder for
    an ONNX genai model)."""

    path: Path
    repo: str
    revision: str
    file: str


def is_hub_ref(name: str) -> bool:
    """True for ``hf://...`` and for the short ``ORG/REPO:QUANT`` form (callers check first
    that no such local path exists)."""
    return name.startswith(PREFIX) or bool(_SHORT.match(name))


def parse(name: str) -> tuple[str, str, str]:
    """``(repo, quant, path)`` of a hub reference; at most one of quant and path is set."""
    m = _SHORT.match(name)
    if m:
        return f"{m.group(1)}/{m.group(2)}", m.group(3), ""
    rest = name[len(PREFIX):].strip("/")
    parts = rest.split("/", 2)
    if len(parts) < 2 or not all(re.fullmatch(_PART, p) for p in parts[:2] if ":" not in p):
        raise InputError(f"{name!r} is not a Hugging Face reference: use hf://ORG/REPO[:QUANT|/FILE.gguf]")
    org, repo = parts[0], parts[1]
    quant = ""
    if ":" in repo:
        repo, quant = repo.split(":", 1)
    path = parts[2] if len(parts) == 3 else ""
    if not (re.fullmatch(_PART, org) and re.fullmatch(_PART, repo)) or (quant and path) or ".." in path.split("/"):
        raise InputError(f"{name!r} is not a Hugging Face reference: use hf://ORG/REPO[:QUANT|/FILE.gguf]")
    return f"{org}/{repo}", quant, path


def quant_of(filename: str) -> str:
    """The quant level a GGUF file name carries ("SmolLM2-135M-Q4_K_M.gguf" -> "Q4_K_M"), upper
    case; "" when the name has none."""
    stem = _SHARD.sub("", PurePosixPath(filename).name)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.I)
    found = _QUANT_IN_NAME.findall(stem)
    return found[-1].upper() if found else ""


def _ggufs(files: list[str]) -> list[str]:
    """Model GGUFs among a repo's files: no projector (mmproj) files, split models by their
    first shard."""
    out = []
    for f in files:
        name = PurePosixPath(f).name.lower()
        if not name.endswith(".gguf") or name.startswith("mmproj"):
            continue
        shard = _SHARD.search(name)
        if shard and int(shard.group(1)) != 1:
            continue
        out.append(f)
    return sorted(out)


def _shards(files: list[str], first: str) -> list[str]:
    """Every file of a (possibly split) GGUF given its first file."""
    m = _SHARD.search(first)
    if not m:
        return [first]
    prefix = first[: m.start()]
    return sorted(f for f in files if f.startswith(prefix) and _SHARD.search(f)
                  and _SHARD.search(f).group(2) == m.group(2))


def choose(name: str, files: list[str], quant: str, path: str) -> str:
    """The repo file (or genai folder) that ``name`` means among ``files``; InputError names
    what the repo has when nothing matches."""
    if path:
        if path in files:
            return path
        if any(f.startswith(path.rstrip("/") + "/") for f in files):
            return path.rstrip("/")
        raise InputError(f"{name}: no file {path!r} in the repo (files: {_listing(files)})")
    ggufs = _ggufs(files)
    genai = sorted({str(PurePosixPath(f).parent) for f in files if PurePosixPath(f).name == GENAI_CONFIG})
    if quant:
        hits = [f for f in ggufs if quant_of(f) == quant.upper()]
        if not hits:
            hits = [g for g in genai if quant.lower() in g.lower()]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"{name}: {quant} matches several files ({', '.join(hits)}); name one with /FILE")
        have = sorted({quant_of(f) or PurePosixPath(f).name for f in ggufs}) or genai
        raise InputError(f"{name}: the repo has no {quant} model (it has: {', '.join(have) or 'no GGUF or ONNX genai model'})")
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        default = [f for f in ggufs if quant_of(f) == DEFAULT_QUANT]
        if len(default) == 1:
            return default[0]
        levels = sorted({quant_of(f) or PurePosixPath(f).name for f in ggufs})
        raise InputError(f"{name}: the repo has several GGUFs; add :QUANT (one of {', '.join(levels)})")
    if len(genai) == 1:
        return "" if genai[0] == "." else genai[0]
    if genai:
        raise InputError(f"{name}: the repo has several ONNX genai models; add /FOLDER (one of {', '.join(genai)})")
    raise InputError(f"{name}: the repo holds no GGUF file and no {GENAI_CONFIG} (files: {_listing(files)})")


def _listing(files: list[str], most: int = 8) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "") if files else "none"


def _cached_snapshot(repo: str, cache_dir: Path) -> tuple[str, Path] | None:
    """(revision, snapshot folder) of the repo's main branch in the local cache, or None."""
    from huggingface_hub.file_download import repo_folder_name

    folder = cache_dir / repo_folder_name(repo_id=repo, repo_type="model")
    try:
        revision = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snap = folder / "snapshots" / revision
    return (revision, snap) if re.fullmatch(r"[0-9a-f]{40}", revision) and snap.is_dir() else None


def _files_in(snap: Path) -> list[str]:
    return sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def resolve(name: str, cache_dir: str | Path | None = None, offline: bool | None = None) -> HubModel:
    """The model ``name`` refers to, as a path in the local cache, downloading what is missing
    unless offline (``HF_HUB_OFFLINE``). Blocks for a download; InputError (one line) for a name
    that matches nothing, a level the repo lacks, or a file that is neither cached nor allowed to
    be fetched."""
    from huggingface_hub import constants

    repo, quant, path = parse(name)
    # the environment as it is now (huggingface_hub.constants froze it when first imported)
    cache = Path(cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()
    offline = _offline() if offline is None else offline
    cached = _cached_snapshot(repo, cache)
    if cached:  # the cache first: a match there needs no network
        revision, snap = cached
        files = _files_in(snap)
        try:
            chosen = choose(name, files, quant, path)
        except InputError:
            if offline:
                raise
        else:
            return HubModel(snap / chosen, repo, revision, chosen or ".")
    if offline:
        raise InputError(f"{name}: {repo} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")
    return _download(name, repo, quant, path, cache)


def _download(name: str, repo: str, quant: str, path: str, cache: Path) -> HubModel:
    """List the repo on the Hub, choose, and fetch the chosen file(s) into the cache."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = HfApi().model_info(repo)
        files = sorted(s.rfilename for s in info.siblings or [])
        chosen = choose(name, files, quant, path)
        revision = info.sha
        if chosen.lower().endswith(".gguf"):
            local = ""
            for f in _shards(files, chosen):
                got = hf_hub_download(repo, f, revision=revision, cache_dir=cache)
                local = local or got
        else:
            pattern = [f"{chosen}/*"] if chosen else None
            snap = snapshot_download(repo, revision=revision, cache_dir=cache, allow_patterns=pattern)
            local = str(Path(snap) / chosen)
    except InputError:
        raise
    except RepositoryNotFoundError:
        raise InputError(f"{name}: no such repo on the Hugging Face Hub (or it is private: set HF_TOKEN)") from None
    except Exception as e:  # HTTP, connection and disk errors alike: one line, nothing run
        raise InputError(f"{name}: could not fetch from the Hugging Face Hub: {str(e).splitlines()[0]}") from None
    return HubModel(Path(local), repo, revision, chosen or ".")
