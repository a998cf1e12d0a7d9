"""The start-up report of a scanned image folder: images per class and label, what was left out and why."""
from __future__ import annotations

import os

from sagan_tf.data.image_folder.scan import EXAMPLES_IN_LOG, SKIP_REASONS, ImageFolderIndex
from sagan_tf.run import files

__all__ = ["format_summary", "SMALL_CLASS_FRACTION"]

#: A class with fewer images than this fraction of the largest class is marked in the summary.
SMALL_CLASS_FRACTION = 0.1


def format_summary(index: ImageFolderIndex) -> str:
    """The start-up report of an index: images per class with its label, dropped classes, skipped files
    per reason with a few example paths (relative to the folder)."""
    def relative(path):
        return _relative_path(path, index.data_dir)

    lines = []
    if index.unconditional:
        lines.append(f"Image folder {index.data_dir}: {len(index)} images, unconditional (num_classes=0, labels "
                     "ignored)")
    else:
        counts = index.class_counts()
        lines.append(f"Image folder {index.data_dir}: {len(index)} images in {len(index.class_names)} classes")
        width = max(len("class"), *(len(name) for name in index.class_names))
        lines.append(f"  {'label':>5}  {'class':<{width}}  {'images':>6}")
        for label, (name, count) in enumerate(zip(index.class_names, counts)):
            note = "  (few: < 10% of the largest class)" if count < SMALL_CLASS_FRACTION * max(counts) else ""
            lines.append(f"  {label:>5}  {name:<{width}}  {count:>6}{note}")
    if index.dropped_classes:
        lines.append(f"Dropped {len(index.dropped_classes)} class folder(s) without a readable image: "
                     f"{', '.join(index.dropped_classes)}")
    if index.skipped:
        lines.append(f"Skipped {index.num_skipped} path(s):")
        for reason, paths in index.skipped.items():
            examples = ", ".join(relative(p) for p in paths[:EXAMPLES_IN_LOG])
            more = ", ..." if len(paths) > EXAMPLES_IN_LOG else ""
            lines.append(f"  {len(paths):>6}  {SKIP_REASONS[reason]}: {examples}{more}")
    else:
        lines.append("Skipped nothing: every file is a readable image.")
    return "\n".join(lines)


def _relative_path(path: str, root: str) -> str:
    """`path` relative to the folder `root` it was found in (URIs: the part after `root/`)."""
    if not files.is_uri(root):
        return os.path.relpath(path, root)
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path
