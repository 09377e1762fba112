"""A built-in captioning data set in the layout of the course's COCO data, so the sequence
notebooks run offline: 32x32 images of one coloured shape each, described by generated
captions ("a big red circle in the top left"), with image features a model can read.
"""

import numpy as np

from convlab._checks import check_count
from convlab.features import hog_feature

CAPTION_SHAPES = ("circle", "square", "triangle", "cross")
CAPTION_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230),
                   "yellow": (230, 220, 40), "white": (240, 240, 240), "purple": (160, 60, 200)}
CAPTION_SIZES = {"small": 5.0, "big": 9.0}  # radius in pixels
_SPECIAL = ("<NULL>", "<START>", "<END>", "<UNK>")
_CAPTION_LENGTH = 12  # <START>, at most 10 words, <END>; shorter captions are padded
_FEATURE_GRID = 8  # features on an 8x8 grid of 4x4-pixel cells


def _vocabulary():
    words = ["a", "in", "the", "top", "bottom", "left", "right", "has", *CAPTION_SIZES,
             *CAPTION_COLOURS, *CAPTION_SHAPES]
    idx_to_word = [*_SPECIAL, *words]
    return idx_to_word, {word: i for i, word in enumerate(idx_to_word)}


def _draw(shape, radius, cy, cx, colour, rng):
    """One (32, 32, 3) uint8 image: the shape over a dark noisy background."""
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        inside = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        inside = (np.abs(dx) <= 0.85 * radius) & (np.abs(dy) <= 0.85 * radius)
    elif shape == "triangle":
        inside = (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) * 0.55)
    else:  # cross
        arm = max(0.3 * radius, 1.5)
        inside = (((np.abs(dx) <= arm) & (np.abs(dy) <= radius))
                  | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius)))
    image = rng.normal(30.0, 12.0, (32, 32, 3))
    image[inside] = np.asarray(colour) + rng.normal(0.0, 12.0, (int(inside.sum()), 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _features(images):
    """(N, 32, 32, 3) uint8 -> (N, 768) float32, what the course's CNN features stand for:
    the colours (the image average-pooled to 8x8 per channel) and the edges (a HOG of
    8x8 cells of 4x4 pixels, 9 orientations), on comparable scales."""
    N = images.shape[0]
    k = 32 // _FEATURE_GRID
    pooled = images.reshape(N, _FEATURE_GRID, k, _FEATURE_GRID, k, 3).mean(axis=(2, 4))
    edges = [hog_feature(image, cell=k) for image in images]
    edges = np.stack(edges) if N else np.zeros((0, _FEATURE_GRID**2 * 9))
    # The mean gradient magnitudes are ~16x smaller than pixel values; scaled to match.
    return (np.hstack([pooled.reshape(N, -1), 16 * edges]) / 255.0).astype(np.float32)


def _split(n, rng, word_to_idx):
    images, captions, image_idxs = [], [], []
    sizes, colours = list(CAPTION_SIZES), list(CAPTION_COLOURS)
    for i in range(n):
        shape = CAPTION_SHAPES[rng.integers(len(CAPTION_SHAPES))]
        colour = colours[rng.integers(len(colours))]
        size = sizes[rng.integers(len(sizes))]
        vertical = ("top", "bottom")[rng.integers(2)]
        horizontal = ("left", "right")[rng.integers(2)]
        radius = CAPTION_SIZES[size] * rng.uniform(0.9, 1.1)
        # the centre lies clearly inside the named quadrant (3 pixels from the middle lines),
        # the whole shape inside the image
        cy = rng.uniform(radius, 13.0) if vertical == "top" else rng.uniform(19.0, 32 - radius)
        cx = rng.uniform(radius, 13.0) if horizontal == "left" else rng.uniform(19.0, 32 - radius)
        images.append(_draw(shape, radius, cy, cx, CAPTION_COLOURS[colour], rng))
        # two phrasings per image, as COCO has several captions per image
        for words in (["a", size, colour, shape, "in", "the", vertical, horizontal],
                      ["the", vertical, horizontal, "has", "a", size, colour, shape]):
            tokens = ["<START>", *words, "<END>"]
            row = np.full(_CAPTION_LENGTH, word_to_idx["<NULL>"], dtype=np.int32)
            row[:len(tokens)] = [word_to_idx[w] for w in tokens]
            captions.append(row)
            image_idxs.append(i)
    images = np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)
    captions = np.stack(captions) if captions else np.zeros((0, _CAPTION_LENGTH), np.int32)
    return images, captions, np.asarray(image_idxs, dtype=np.int32)


def load_builtin_captions(num_train=1000, num_val=200, seed=0):
    """A small captioning data set that needs no download, in the layout of the course's
    ``load_coco_data``.

    Each image shows one shape (circle, square, triangle, cross) of one colour (red, green,
    blue, yellow, white, purple) and size (small, big) in one quadrant, and has two captions,
    "a big red circle in the top left" and "the top left has a big red circle". The images
    depend only on the sizes and ``seed`` (a np.random.default_rng seed).

    Returns a dict with ``train_captions`` (2 num_train, 12) int32 word indices (padded with
    '<NULL>'), ``train_image_idxs`` (2 num_train,) int32 rows of ``train_features``
    (num_train, 768) float32 (the image's colours average-pooled to 8x8 and a HOG of its
    edges on the same grid: what the course's CNN features stand for), ``train_images``
    (num_train, 32, 32, 3) uint8, the same for ``val_``, and ``word_to_idx`` /
    ``idx_to_word`` (a dict and a list).
    """
    num_train = check_count("num_train", num_train, allow_zero=False)
    num_val = check_count("num_val", num_val)
    rng = np.random.default_rng(seed)
    idx_to_word, word_to_idx = _vocabulary()
    data = {"word_to_idx": word_to_idx, "idx_to_word": idx_to_word}
    for split, n in (("train", num_train), ("val", num_val)):
        images, captions, image_idxs = _split(n, rng, word_to_idx)
        data[f"{split}_captions"] = captions
        data[f"{split}_image_idxs"] = image_idxs
        data[f"{split}_features"] = _features(images)
        data[f"{split}_images"] = images
    return data
