"""Image data sets for proxy training, read from local files only (nothing is downloaded).

- ``digits``: scikit-learn's handwritten digits (1,797 8x8 grayscale images, 10 classes), which
  ship inside scikit-learn, so a search works offline with no data from the user.
- ``cifar10`` / ``cifar100``: the standard Python versions (Krizhevsky, 2009,
  https://www.cs.toronto.edu/~kriz/cifar.html), read directly with a restricted unpickler that
  admits only what those files hold (numpy arrays, dtypes, lists, bytes, ints).
- ``folder``: class sub-folders of PNG/JPEG images (``DIR/<class>/*.png``), or
  ``DIR/train/<class>/...`` with ``DIR/test/<class>/...`` (or ``val/``) as the official split.

Every data set becomes an :class:`ImageData`: uint8 tensors ``(N, 3, H, W)`` (grayscale is
repeated to 3 channels) and int64 labels. The validation split is drawn from the training images
by the seed, stratified per class, and is never trained on; it is the same for every candidate
of a run because it depends only on (data set, seed, val_fraction, max_val).

One job a module: ``load`` (:func:`load_dataset`, :func:`load_folder_files`), ``image_data``
(the in-memory type), ``files`` (a folder as file lists, for streaming), ``splits`` (validation
split and subsets), one reader per format (``digits``, ``cifar``, ``folder``), ``images`` (one
image file decoded and cropped), ``folder_cache`` (decoded folders on disk) and ``source`` (what
readers return).
"""

from evaluators.data.cifar import CIFAR_URL
from evaluators.data.files import FolderFiles
from evaluators.data.folder import DEFAULT_FOLDER_SIZE, IMAGE_SUFFIXES
from evaluators.data.folder_cache import default_cache_dir
from evaluators.data.image_data import DataError, ImageData
from evaluators.data.load import DATASETS, load_dataset, load_folder_files

__all__ = ["DataError", "ImageData", "FolderFiles", "DATASETS", "default_cache_dir",
           "load_dataset", "load_folder_files", "CIFAR_URL", "IMAGE_SUFFIXES",
           "DEFAULT_FOLDER_SIZE"]
