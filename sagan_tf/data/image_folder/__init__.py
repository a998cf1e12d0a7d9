"""A directory of images, one sub-folder per class (or a flat folder, unconditionally), decoded with Pillow.

    data_dir/
      cat/    0001.jpg  0002.png  ...
      dog/    a.gif  b/c.bmp  ...

Class ids are the sorted sub-folder names (hidden entries ignored); files are found recursively inside
each class folder by extension (JPEG, PNG, BMP, GIF, WebP, TIFF; case-insensitive). Files of any size
and mode (grayscale, RGBA, CMYK, palette, 16-bit) are converted to RGB or L, centre-cropped to a square
and resized to the requested resolution. With ``unconditional=True`` every image anywhere under
``data_dir`` (sub-folders or not) is one pool with label 0, for ``num_classes=0``. ``data_dir`` is a local
directory or a URI that `tf.io.gfile` lists and reads (``file:///...``, ``gs://bucket/...``, ``ram://...``).

`scan` walks the folder once and checks every image (`scan_image_folder`), `report` prints what it found
(`format_summary`), `resume` refuses a folder whose classes changed under a run, `decode` reads one file
(`load_image`), `pipeline` is the training input (`image_folder_dataset`).
"""
from sagan_tf.data.image_folder.decode import load_image
from sagan_tf.data.image_folder.pipeline import image_folder_dataset
from sagan_tf.data.image_folder.report import format_summary
from sagan_tf.data.image_folder.resume import check_same_classes_as_run
from sagan_tf.data.image_folder.scan import (DUPLICATE, IMAGE_EXTENSIONS, LINK_OUTSIDE, NOT_AN_IMAGE, NOT_IN_CLASS,
                                             NOT_SELECTED, UNREADABLE, ImageFolderIndex, has_class_folders,
                                             image_folder_class_names, scan_image_folder)

__all__ = ["ImageFolderIndex", "image_folder_class_names", "has_class_folders", "scan_image_folder",
           "check_same_classes_as_run", "format_summary", "load_image", "image_folder_dataset", "IMAGE_EXTENSIONS",
           "UNREADABLE", "NOT_AN_IMAGE", "LINK_OUTSIDE", "DUPLICATE", "NOT_IN_CLASS", "NOT_SELECTED"]
