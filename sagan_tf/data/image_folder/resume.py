"""Resuming an image-folder run: the folder must still give the classes the run was trained on."""
from __future__ import annotations

from sagan_tf.data.image_folder.scan import FILE_ERRORS, ImageFolderIndex
from sagan_tf.run import files, run_dir

__all__ = ["check_same_classes_as_run"]


def check_same_classes_as_run(model_dir: str | None, index: ImageFolderIndex) -> None:
    """Fails if `model_dir` holds an image-folder run whose recorded classes differ from `index`'s.

    Resuming such a run would silently give the old labels to other classes (or change their number).

    Raises:
      ValueError: naming both class lists and the classes added and removed.
    """
    path = run_dir.config_file(model_dir) if model_dir else None
    if not path or not files.exists(path) or files.isdir(path):
        return
    try:
        recorded = files.read_json(path)
    except (*FILE_ERRORS, ValueError):
        return  # an unreadable config.json is reported by the training run itself
    if recorded.get("dataset") != "image_folder":
        return
    old_names = [str(name) for name in recorded.get("class_names") or ()]
    old_count = recorded.get("num_classes")
    new_names = list(index.class_names)
    if old_names == new_names or (not old_names and old_count == len(new_names)):
        return

    def describe(names, count):
        return f"{count} classes {names}" if names or not count else f"{count} classes"
    changes = ""
    if old_names:
        added = [name for name in new_names if name not in old_names]
        removed = [name for name in old_names if name not in new_names]
        changes = (f" (new: {added or 'none'}; gone: {removed or 'none'}"
                   f"{'; same names, other labels' if not added and not removed else ''})")
    raise ValueError(f"{model_dir} was trained on {describe(old_names, old_count)} but {index.data_dir} now gives "
                     f"{describe(new_names, len(new_names))}{changes}; resuming would give the run's labels to "
                     "other classes. Use a new --model_dir, or restore the folder's classes.")
