"""Output folders and files: every command that writes one claims it here first.

A folder already holding the outputs of a run (of any command) is refused unless the user says
``--overwrite``; then the files that run wrote are removed first, so no metrics file or figure
of the old run is left beside the new ones. Results *about* a run (``mtfap evaluate``,
``graph``, ``cam``) replace their own earlier results freely, but not a run. Temporary files
left by an atomic write that was killed (``.NAME.XXXX.tmp``, :mod:`mtfap.io`) are removed at
every claim, and at every resume of a training run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mtfap.errors import DataError
from mtfap.io import remove_stale_temporaries, stale_temporaries


@dataclass(frozen=True)
class OutputKind:
    """What one command writes into its folder.

    markers : name patterns of which one present means the folder holds this kind.
    files : name patterns of everything this kind writes (removed when it is replaced).
    subfolders : patterns of sub-folders written into it by other commands (``eval-test`` of
        ``mtfap evaluate``) or by itself (the runs of an end-to-end sweep), removed with it.
    derived : results about another run, which a new result of the same kind may replace.
    """

    name: str
    command: str
    markers: tuple[str, ...]
    files: tuple[str, ...]
    subfolders: tuple[str, ...] = ()
    derived: bool = False


_RESULTS_OF_A_RUN = ("eval-*", "cam", "graph")

# In the order a folder is recognised: a kind's files are not read again as another's
# markers (a compare folder holds a sweep.json, a train folder a metrics.json).
KINDS: dict[str, OutputKind] = {kind.name: kind for kind in (
    OutputKind("train", "mtfap train", ("config.json", "last.pt", "best.pt"),
               ("config.json", "model.json", "last.pt", "best.pt", "metrics.json", "metrics.csv",
                "metrics.png", "heads_summary.json"), _RESULTS_OF_A_RUN),
    OutputKind("heads", "mtfap fit-heads", ("heads.json", "heads.npz"),
               ("heads.json", "heads.npz", "metrics.json"), _RESULTS_OF_A_RUN),
    OutputKind("compare", "mtfap compare", ("summary.json",),
               ("comparison.csv", "comparison.md", "comparison.json", "summary.csv", "summary.md",
                "summary.json", "sweep.json", "sweep.csv", "sweep.png", "sweep.svg",
                "graph_heatmap.png", "graph_heatmap.svg", "graph_clusters.png",
                "graph_clusters.svg", "clusters.json")),
    OutputKind("sweep", "mtfap sweep", ("sweep.json",),
               ("sweep.json", "sweep.csv", "sweep.png", "sweep.svg"), ("*=*",)),
    OutputKind("evaluate", "mtfap evaluate", ("metrics.md",),
               ("metrics.csv", "metrics.md", "metrics.json", "comparison.csv", "comparison.md",
                "comparison.json"), derived=True),
    OutputKind("graph", "mtfap graph", ("clusters.json",),
               ("graph_heatmap.png", "graph_heatmap.svg", "graph_clusters.png",
                "graph_clusters.svg", "clusters.json"), derived=True),
    OutputKind("compare-runs", "mtfap compare-runs", ("runs_comparison.json",),
               ("runs_comparison.json", "runs_comparison.md", "per_attribute.csv"), ("scores",)),
    OutputKind("cam", "mtfap cam", ("cam_*.png",), ("cam_*.png", "cam_*.svg"), derived=True),
)}


def _matching(folder: Path, patterns) -> set[Path]:
    return {path for pattern in patterns for path in folder.glob(pattern) if path.is_file()}


def kinds_in(folder: str | Path) -> list[str]:
    """The kinds of output (``KINDS``) that ``folder`` holds, in recognition order."""
    folder, found, explained = Path(folder), [], set()
    if not folder.is_dir():
        return found
    for kind in KINDS.values():
        if _matching(folder, kind.markers) - explained:
            found.append(kind.name)
            explained |= _matching(folder, kind.files)
    return found


def _remove_outputs(folder: Path, kind: OutputKind) -> None:
    """Delete what ``kind`` wrote into ``folder``: its files by name, and the sub-folders of
    results that hold nothing but results (a user's own file keeps its folder)."""
    for path in _matching(folder, kind.files):
        path.unlink(missing_ok=True)
    for pattern in kind.subfolders:
        for sub in (p for p in folder.glob(pattern) if p.is_dir()):
            kinds = [KINDS[name] for name in kinds_in(sub)]
            ours = set().union(*(_matching(sub, k.files) for k in kinds)) if kinds else set()
            remove_stale_temporaries(sub)
            if kinds and {p for p in sub.rglob("*") if p.is_file()} <= ours:
                shutil.rmtree(sub)


def prepare_output_folder(folder: str | Path, kind: str, *, overwrite: bool = False,
                          flag: str = "--out", protect=(), check_only: bool = False) -> Path:
    """Make ``folder`` ready for the outputs of ``kind`` (a key of ``KINDS``) and return it.

    Raises DataError naming the folder when it is an existing file, when it is one of the
    ``protect`` folders (the run being read), or when it holds a run and ``overwrite`` is not
    set (results of the same derived kind are replaced without asking). With ``overwrite``,
    what the old run wrote is removed first; other files are left alone.

    check_only : only raise what would be raised, change nothing (call it before a long
        computation, and again without it just before writing).
    """
    folder, mine = Path(folder), KINDS[kind]
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{flag} is an existing file, not a folder", folder,
                        hint="give the path of a new folder (or of one that "
                             f"`{mine.command}` wrote before)")
    if folder.is_dir():
        if any(folder.resolve() == Path(p).resolve() for p in protect):
            raise DataError(f"{flag} is the folder of the run being read", folder,
                            hint="write into another folder, such as the default sub-folder")
        found = kinds_in(folder)
        others = [name for name in found if not (name == kind and mine.derived)]
        if others and not overwrite:
            what = " and ".join(f"`{KINDS[name].command}`" for name in others)
            raise DataError(f"{flag} already holds the outputs of {what}", folder,
                            hint="choose another folder, or pass --overwrite to replace them")
        if check_only:
            return folder
        for name in found:
            _remove_outputs(folder, KINDS[name])
        remove_stale_temporaries(folder)
    if check_only:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the {flag} folder ({exc.strerror or exc})", folder,
                        hint="a part of the path is a file, or the location is not writable") \
            from None
    return folder


def prepare_output_file(path: str | Path, flag: str = "--out", suffix: str | None = None) -> Path:
    """Check that ``path`` can receive an output file (a folder of that name, a parent that is a
    file, or a file that a run wrote, such as its ``heads.npz``, are clean errors), with the
    expected ``suffix``; remove the temporaries that a killed write of it left; return it."""
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise DataError(f"{flag} must end in {suffix}", path,
                        hint=f"for example {path.with_suffix(suffix).name}")
    if path.is_dir():
        raise DataError(f"{flag} is a folder, not a file", path,
                        hint=f"give a file path such as {path / ('features' + (suffix or ''))}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"cannot write {flag}: {parent} is a file, not a folder", path)
            break
    for name in kinds_in(path.parent):
        if path in _matching(path.parent, KINDS[name].files):
            raise DataError(f"{flag} is a file of the run in {path.parent} (written by "
                            f"`{KINDS[name].command}`)", path, hint="choose another file name")
    for stale in stale_temporaries(path.parent):
        if stale.name.startswith(f".{path.name}."):
            stale.unlink(missing_ok=True)
    return path
