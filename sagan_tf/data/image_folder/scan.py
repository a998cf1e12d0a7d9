"""Scanning an image folder once: its class folders, its images in a fixed order, and what was left out.

The walk stays inside ``data_dir``: a symbolic link whose target lies outside it is not followed, and
each real directory and file is visited once (a link to a directory or file that is also reachable
some other way, such as ``up -> ..``, is skipped as a duplicate; the real path wins over the link).
Links exist only on local filesystems (a plain path or ``file://``); elsewhere every entry is real.

Unreadable files (empty, not an image, truncated) are found ONCE, when the dataset is built, by
decoding every file at the smallest size Pillow allows; they are left out of the example list. Dropping
them before the shuffle, rather than filtering while training, keeps the number of examples fixed,
which exact resuming (`start_step`) depends on. The price is one pass over the folder at start-up,
spread over a thread pool (a second scan of an unchanged folder in the same process reuses the
results). Everything left out is recorded in `ImageFolderIndex.skipped` by reason, and
`report.format_summary` turns an index into the start-up report the trainer prints.

A class folder without a single readable image is an error naming it (a class the discriminator never
sees real images of would still be asked of the generator), unless ``drop_empty_classes=True`` leaves
it out with a warning.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import posixpath
from typing import Sequence

import tensorflow as tf

from sagan_tf.data.image_folder.decode import load_image
from sagan_tf.run import files

__all__ = [
    "ImageFolderIndex",
    "image_folder_class_names",
    "has_class_folders",
    "scan_image_folder",
    "IMAGE_EXTENSIONS",
    "SKIP_REASONS",
    "EXAMPLES_IN_LOG",
    "FILE_ERRORS",
    "UNREADABLE",
    "NOT_AN_IMAGE",
    "LINK_OUTSIDE",
    "DUPLICATE",
    "NOT_IN_CLASS",
    "NOT_SELECTED",
]

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: How many paths per skip reason a log line or the summary quotes.
EXAMPLES_IN_LOG = 3
# Why a file (or a directory, for the link reasons) was left out: the keys of ImageFolderIndex.skipped.
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not an image"
LINK_OUTSIDE = "link outside the folder"
DUPLICATE = "duplicate"
NOT_IN_CLASS = "not in a class folder"
NOT_SELECTED = "class not selected"
SKIP_REASONS = {
    UNREADABLE: "unreadable (cannot be decoded)",
    NOT_AN_IMAGE: f"not an image (extension not in {' '.join(IMAGE_EXTENSIONS)})",
    LINK_OUTSIDE: "symlink leading outside the folder (not followed)",
    DUPLICATE: "already found through another path (symlink)",
    NOT_IN_CLASS: "image directly in the folder, not in a class sub-folder",
    NOT_SELECTED: "in a folder that is not one of the selected class_names",
}


@dataclasses.dataclass(frozen=True)
class ImageFolderIndex:
    """The readable images of a folder in their fixed, sorted order, and what was left out.

    `class_names` is empty for an unconditional index (every label 0). `skipped` maps a reason (a key
    of `SKIP_REASONS`) to the paths left out for it; `dropped_classes` are class folders without a
    readable image left out by ``drop_empty_classes=True``.
    """

    data_dir: str
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    skipped: dict[str, tuple[str, ...]]
    dropped_classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def unconditional(self) -> bool:
        return not self.class_names

    def class_counts(self) -> list[int]:
        """Images per class, by label."""
        counts = collections.Counter(self.labels)
        return [counts.get(label, 0) for label in range(len(self.class_names))]

    @property
    def num_skipped(self) -> int:
        return sum(len(paths) for paths in self.skipped.values())


def image_folder_class_names(data_dir: str) -> list[str]:
    """Sorted names of the class sub-folders of `data_dir`, before any file is checked.

    `scan_image_folder(...).class_names` is the authoritative list (it leaves out links that lead
    outside the folder or duplicate another folder, and dropped empty classes).

    Raises:
      FileNotFoundError: `data_dir` does not exist.
      ValueError: `data_dir` has no (non-hidden) sub-folder.
    """
    _check_exists(data_dir)
    names = sorted(name for name in _walk(data_dir).files if name is not None)
    if not names:
        raise ValueError(_no_class_folders_message(data_dir))
    return names


def has_class_folders(data_dir: str) -> bool:
    """Whether `data_dir` has at least one (non-hidden) sub-folder inside it: False for a flat folder of images."""
    _check_exists(data_dir)
    return any(name is not None for name in _walk(data_dir).files)


def _check_exists(data_dir: str) -> None:
    if not files.isdir(data_dir):
        raise FileNotFoundError(f"image folder {data_dir} does not exist or is not a directory")


def _no_class_folders_message(data_dir: str) -> str:
    return (f"image folder {data_dir} has no class sub-folders; put the images in one sub-folder per class, "
            "or train unconditionally on every image in it (unconditional=True; trainers.image_folder: "
            "--unconditional)")


@dataclasses.dataclass
class _Tree:
    """What one walk of a folder found: image candidates keyed by their top-level entry (None: files
    directly in the folder), the entries left out by reason, the real path of each directory walked
    (keyed by the path it was walked as) and the real path of each file that is a symlink."""
    files: dict
    skipped: dict
    dir_real: dict
    link_real: dict


#: What listing, stat-ing or reading a path can raise: OSError locally, tf.errors.OpError through tf.io.gfile.
FILE_ERRORS = (OSError, tf.errors.OpError)


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _parent(path: str) -> str:
    """The directory part of an entry path (posix rules for URIs, whose `//` must survive)."""
    return posixpath.dirname(path) if files.is_uri(path) else os.path.dirname(path)


def _basename(path: str) -> str:
    return posixpath.basename(path) if files.is_uri(path) else os.path.basename(path)


def _dir_key(directory: str) -> str:
    """`directory` as `_parent` gives it back for the entries listed in it."""
    if files.is_uri(directory):
        return directory.rstrip("/")
    return directory.rstrip(os.sep) or os.sep


class _LocalEntry:
    """An entry of a local directory (a plain path or `file://`): `os.scandir`'s, named in the walk's form."""

    __slots__ = ("name", "path", "_entry")

    def __init__(self, entry: os.DirEntry, path: str):
        self.name, self.path, self._entry = entry.name, path, entry

    def is_symlink(self) -> bool:
        return self._entry.is_symlink()

    def is_dir(self) -> bool:  # follows links
        return self._entry.is_dir()

    def is_file(self) -> bool:
        return self._entry.is_file()

    def link_target(self) -> str:
        """The real (local) path a link leads to."""
        return os.path.realpath(self._entry.path)


class _GfileEntry:
    """An entry of a directory on another filesystem (gs://, ram://, ...), which has no links."""

    __slots__ = ("name", "path", "_is_dir")

    def __init__(self, name: str, path: str):
        self.name, self.path, self._is_dir = name, path, None

    def is_symlink(self) -> bool:
        return False

    def is_dir(self) -> bool:
        if self._is_dir is None:
            self._is_dir = files.isdir(self.path)
        return self._is_dir

    def is_file(self) -> bool:
        return not self.is_dir()

    def link_target(self) -> str:
        return self.path


def _list(directory: str) -> list:
    """The entries of `directory`, sorted by name, with paths `directory` joined with each name."""
    local = files.local_path(directory)
    if local is not None:
        return [_LocalEntry(entry, files.join(directory, entry.name))
                for entry in sorted(os.scandir(local), key=lambda entry: entry.name)]
    return [_GfileEntry(name, files.join(directory, name)) for name in files.listdir(directory)]


def _real_root(data_dir: str) -> str:
    """What the walk compares real paths against: the local real path, or the URI itself."""
    local = files.local_path(data_dir)
    return os.path.realpath(local) if local is not None else data_dir.rstrip("/")


def _real_child(real: str, name: str) -> str:
    return files.join(real, name)


def _walk(data_dir: str) -> _Tree:
    """Walks `data_dir` once, following links only inside it and visiting each real directory once.

    Real directories are walked first and links to directories afterwards, so a link never takes a
    directory away from the path that really holds it (``cats/best -> ../dogs/2020`` does not move
    dogs/2020 into the cats class). Hidden entries (".name") are ignored without a report. Only links
    cost a `realpath`; a real entry's real path is its directory's plus its name.
    """
    root_real = _real_root(data_dir)
    files: dict = {}
    skipped: dict = collections.defaultdict(list)
    dir_real: dict = {}
    link_real: dict = {}
    visited = {root_real}
    # (directory, its real path, top-level class entry or None)
    real_queue = collections.deque([(data_dir, root_real, None)])
    link_queue = collections.deque()
    while real_queue or link_queue:
        if real_queue:
            directory, real, top = real_queue.popleft()
        else:
            directory, real, top = link_queue.popleft()
            if real in visited:
                skipped[DUPLICATE].append(directory)
                continue
            visited.add(real)
        dir_real[_dir_key(directory)] = real
        if top is not None:
            files.setdefault(top, [])  # a class folder, even if it holds no image
        try:
            entries = _list(directory)
        except FILE_ERRORS:
            skipped[UNREADABLE].append(directory)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            entry_top = top if top is not None else entry.name
            try:
                is_link = entry.is_symlink()
                entry_real = entry.link_target() if is_link else _real_child(real, entry.name)
                if is_link and not _inside(entry_real, root_real):
                    skipped[LINK_OUTSIDE].append(entry.path)
                elif entry.is_dir():  # follows links (inside the folder)
                    if is_link:
                        link_queue.append((entry.path, entry_real, entry_top))
                    elif entry_real in visited:  # only when a link followed earlier led below it
                        skipped[DUPLICATE].append(entry.path)
                    else:
                        visited.add(entry_real)
                        real_queue.append((entry.path, entry_real, entry_top))
                elif entry.is_file() or is_link:  # a dangling link is found unreadable later
                    if entry.name.lower().endswith(IMAGE_EXTENSIONS):
                        files.setdefault(top, []).append(entry.path)
                        if is_link:
                            link_real[entry.path] = entry_real
                    else:
                        skipped[NOT_AN_IMAGE].append(entry.path)
            except FILE_ERRORS:
                skipped[UNREADABLE].append(entry.path)
    return _Tree(files={top: sorted(paths) for top, paths in files.items()}, skipped=dict(skipped),
                 dir_real=dir_real, link_real=link_real)


def _without_duplicate_files(candidates: list, tree: _Tree, skipped: dict) -> list:
    """Keeps one path per real file: the real one (not a link) if there is one, else the first link in order.

    Without file links every candidate is a distinct file already (each real directory is walked once).
    """
    if not any(path in tree.link_real for path, _ in candidates):
        return candidates
    plain = {_real_child(tree.dir_real[_dir_key(_parent(path))], _basename(path))
             for path, _ in candidates if path not in tree.link_real}
    kept, linked = [], set()
    for path, label in candidates:
        real = tree.link_real.get(path)
        if real is not None and (real in plain or real in linked):
            skipped.setdefault(DUPLICATE, []).append(path)
            continue
        if real is not None:
            linked.add(real)
        kept.append((path, label))
    return kept


#: Readability of the files of the previous scan, keyed by (path, size, mtime, inode): a second scan of an
#: unchanged folder (the trainer's summary, then the pipeline) decodes nothing again. Files on other
#: filesystems have no inode, and some (ram://) no mtime: size and mtime are all `tf.io.gfile.stat` gives.
_readable_cache: dict = {}


def _file_key(path: str):
    local = files.local_path(path)
    try:
        if local is not None:
            status = os.stat(local)
            return (path, status.st_size, status.st_mtime_ns, status.st_ino)
        status = tf.io.gfile.stat(path)
    except FILE_ERRORS:
        return None
    return (path, status.length, status.mtime_nsec, None)


def _check_readable(paths: Sequence[str]) -> list[bool]:
    global _readable_cache
    keys = [_file_key(path) for path in paths]
    todo = sorted({key for key in keys if key is not None and key not in _readable_cache})
    with concurrent.futures.ThreadPoolExecutor() as pool:  # Pillow releases the GIL while decoding
        results = dict(zip(todo, pool.map(_is_readable, [key[0] for key in todo])))
    cache = {key: _readable_cache[key] if key in _readable_cache else results[key]
             for key in keys if key is not None}
    _readable_cache = cache
    return [key is not None and cache[key] for key in keys]


def scan_image_folder(data_dir: str, *, unconditional: bool = False, class_names: Sequence[str] | None = None,
                      drop_empty_classes: bool = False) -> ImageFolderIndex:
    """Lists the images under `data_dir`, checks that each one decodes, and returns the readable ones.

    Args:
      data_dir: the folder.
      unconditional: every image anywhere under `data_dir` is one pool with label 0 (`class_names` of
        the result is empty).
      class_names: use exactly these class folders, label i = class_names[i] (a run's recorded
        classes); other sub-folders are skipped. Default: every sub-folder, sorted.
      drop_empty_classes: leave out class folders without a readable image (with a warning) instead
        of raising. Only for the default class list.

    Raises:
      FileNotFoundError: `data_dir` does not exist.
      ValueError, naming the folder: no class sub-folders (and not unconditional); a name of
        `class_names` that is not a sub-folder; a class folder without a readable image; no readable
        image at all.
    """
    _check_exists(data_dir)
    tree = _walk(data_dir)
    skipped = {reason: list(paths) for reason, paths in tree.skipped.items()}
    folders = sorted(name for name in tree.files if name is not None)
    if unconditional:
        names: list[str] = []
        candidates = [(path, 0) for top in sorted(tree.files, key=lambda n: (n is not None, n or ""))
                      for path in tree.files[top]]
    else:
        if not folders:
            raise ValueError(_no_class_folders_message(data_dir))
        if class_names is not None:
            names = [str(name) for name in class_names]
            missing = [name for name in names if name not in tree.files]
            if missing:
                raise ValueError(f"image folder {data_dir} has no class folder(s) {missing} (expected from "
                                 f"class_names; it has {folders})")
            for name in folders:
                if name not in names:
                    skipped.setdefault(NOT_SELECTED, []).extend(tree.files[name])
        else:
            names = folders
        candidates = [(path, label) for label, name in enumerate(names) for path in tree.files[name]]
        if tree.files.get(None):
            skipped.setdefault(NOT_IN_CLASS, []).extend(tree.files[None])
    candidates = _without_duplicate_files(candidates, tree, skipped)
    readable = _check_readable([path for path, _ in candidates])
    skipped_unreadable = [path for (path, _), ok in zip(candidates, readable) if not ok]
    if skipped_unreadable:
        skipped.setdefault(UNREADABLE, []).extend(skipped_unreadable)
    kept = [candidate for candidate, ok in zip(candidates, readable) if ok]

    dropped: list[str] = []
    if names:
        counts = collections.Counter(label for _, label in kept)
        empty = [name for label, name in enumerate(names) if not counts.get(label)]
        if empty and not (drop_empty_classes and class_names is None):
            raise ValueError(_empty_classes_message(data_dir, empty, candidates, names, readable))
        if empty:
            dropped = empty
            logger.warning("Dropped %d class folder(s) without a readable image under %s: %s", len(empty), data_dir,
                           ", ".join(empty))
            relabel = {}
            for label, name in enumerate(names):
                if name not in empty:
                    relabel[label] = len(relabel)
            names = [name for name in names if name not in empty]
            kept = [(path, relabel[label]) for path, label in kept]
    if not kept:
        raise ValueError(f"image folder {data_dir} contains no readable {'/'.join(IMAGE_EXTENSIONS)} file "
                         f"{'anywhere' if unconditional else 'in its class sub-folders'} "
                         f"({len(skipped_unreadable)} unreadable)")
    return ImageFolderIndex(data_dir=data_dir, paths=tuple(path for path, _ in kept),
                            labels=tuple(label for _, label in kept), class_names=tuple(names),
                            skipped={reason: tuple(sorted(skipped[reason])) for reason in SKIP_REASONS
                                     if skipped.get(reason)},
                            dropped_classes=tuple(dropped))


def _empty_classes_message(data_dir, empty, candidates, names, readable):
    details = []
    for name in empty:
        label = names.index(name)
        unreadable = sum(1 for (_, lab), ok in zip(candidates, readable) if lab == label and not ok)
        details.append(f"{files.join(data_dir, name)} ({f'{unreadable} unreadable file(s)' if unreadable else 'no image files'})")
    return (f"image folder {data_dir}: class folder(s) {empty} hold no readable image: {'; '.join(details)}. "
            "Add images, remove the folder(s), or leave them out with drop_empty_classes=True "
            "(trainers.image_folder: --drop_empty_classes)")


def _is_readable(path: str) -> bool:
    """Whether `path` fully decodes (at the smallest size the format allows, to keep the scan cheap)."""
    try:
        load_image(path, channels=3, min_size=1)
    except Exception:  # noqa: BLE001 -- any failure to decode, whatever its type, means "skip it"
        return False
    return True
