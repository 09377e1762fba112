"""Datasets: CIFAR-10, image folders, the built-in offline dataset, preprocessing and
augmentation, behind one entry point, :func:`load_dataset`.

| module         | what it holds                                                     |
|----------------|-------------------------------------------------------------------|
| sources        | load_dataset(source, sizes, seed, dtype, ...) -> dict of splits   |
| cifar10        | load_CIFAR_batch, load_CIFAR10, find_CIFAR10_dir, get_CIFAR10_data |
| download       | download_CIFAR10 (streamed, MD5-verified, atomic)                 |
| safe_pickle    | the restricted unpickler the CIFAR batches go through             |
| image_folder   | load_image_folder (directories and tarballs)                      |
| preprocess     | split_per_class, stratified_subset, preprocess_images             |
| builtin        | make_builtin_images, load_builtin_dataset                         |
| captions       | load_builtin_captions (offline captioning data, COCO's layout)    |
| tiny_imagenet  | load_tiny_imagenet (the official directory layout)                |
| augment        | random_crop_flip, random_crop, random_flip                        |

No function here touches NumPy's global random state or keeps module-level mutable state.
"""

from convlab.data.augment import random_crop, random_crop_flip, random_flip
from convlab.data.builtin import BUILTIN_CLASS_NAMES, load_builtin_dataset, make_builtin_images
from convlab.data.captions import load_builtin_captions
from convlab.data.cifar10 import (
    CIFAR10_CLASS_NAMES,
    CIFAR10_DIRNAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    DOWNLOAD_COMMAND,
    default_data_dir,
    find_CIFAR10_dir,
    get_CIFAR10_data,
    load_CIFAR10,
    load_CIFAR_batch,
)
from convlab.data.download import download_CIFAR10
from convlab.data.image_folder import IMG_EXTENSIONS, load_image_folder
from convlab.data.preprocess import preprocess_images, split_per_class, stratified_subset
from convlab.data.sources import SOURCES, load_dataset
from convlab.data.tiny_imagenet import load_tiny_imagenet

__all__ = [
    "BUILTIN_CLASS_NAMES",
    "CIFAR10_CLASS_NAMES",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DOWNLOAD_COMMAND",
    "IMG_EXTENSIONS",
    "SOURCES",
    "default_data_dir",
    "download_CIFAR10",
    "find_CIFAR10_dir",
    "get_CIFAR10_data",
    "load_CIFAR10",
    "load_CIFAR_batch",
    "load_builtin_captions",
    "load_builtin_dataset",
    "load_dataset",
    "load_image_folder",
    "load_tiny_imagenet",
    "make_builtin_images",
    "preprocess_images",
    "random_crop",
    "random_crop_flip",
    "random_flip",
    "split_per_class",
    "stratified_subset",
]
