"""Captioning data helpers (the course's ``cs231n/coco_utils.py``): minibatches of captions
with their image features, and captions decoded back to words.

The course's COCO features cannot be downloaded here; :func:`convlab.data.load_builtin_captions`
makes a small data set in the same layout, so the sequence notebooks run offline.
"""

import numpy as np

from convlab._checks import check_int

__all__ = ["decode_captions", "sample_coco_minibatch"]


def sample_coco_minibatch(data, batch_size=100, split="train", rng=None):
    """``batch_size`` random captions of ``split`` with their images' features.

    data: the dict of load_builtin_captions (or the course's load_coco_data), holding
    '<split>_captions' (M, T), '<split>_image_idxs' (M,), '<split>_features' (I, D) and
    optionally '<split>_urls' (I,). rng: a np.random.Generator, or None for NumPy's global
    state (the course's np.random.choice). Returns captions (B, T), image_features (B, D)
    and urls (B,), or None where the data has no URLs.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    for key in ("captions", "image_idxs", "features"):
        if f"{split}_{key}" not in data:
            raise ValueError(f"data has no {split}_{key!s}: not a captioning data set split")
    split_size = data[f"{split}_captions"].shape[0]
    if rng is None:
        mask = np.random.choice(split_size, batch_size)  # noqa: NPY002 (the course's draw)
    else:
        mask = rng.choice(split_size, batch_size)
    captions = data[f"{split}_captions"][mask]
    image_idxs = data[f"{split}_image_idxs"][mask]
    image_features = data[f"{split}_features"][image_idxs]
    urls = data.get(f"{split}_urls")
    return captions, image_features, None if urls is None else urls[image_idxs]


def decode_captions(captions, idx_to_word):
    """Word indices to strings: '<NULL>' padding dropped, each caption cut after '<END>'.

    captions: (N, T) or (T,) integers; idx_to_word: a list or dict index -> word.
    Returns a list of N strings, or one string for a single caption.
    """
    captions = np.asarray(captions)
    singleton = captions.ndim == 1
    if singleton:
        captions = captions[None]
    if captions.ndim != 2:
        raise ValueError(f"captions must be (N, T) or (T,), got shape {captions.shape}")
    decoded = []
    for row in captions:
        words = []
        for index in row:
            word = idx_to_word[int(index)]
            if word != "<NULL>":
                words.append(word)
            if word == "<END>":
                break
        decoded.append(" ".join(words))
    return decoded[0] if singleton else decoded
