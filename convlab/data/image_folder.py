"""Image folders: ``root/<class>/<image>`` trees, or a ``.tar``/``.tar.gz`` of one."""

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

#: File-name suffixes recognised as images by :func:`load_image_folder` (case-insensitive).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

#: Largest image accepted, in pixels (checked from the header, before decoding): a few
#: hundred kilobytes of PNG can decode to gigabytes.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Largest image file accepted inside an archive, in bytes (read before decoding).
MAX_MEMBER_BYTES = 64 << 20


def _is_image_name(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def _skip_part(part):
    return part.startswith(".") or part == "__MACOSX"


def _collect_from_dir(root):
    """``(image entries [(parts, path)], the directory paths under root)``."""
    entries, directories = [], set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip_part(d))
        rel = Path(dirpath).relative_to(root).parts
        if rel:
            directories.add(rel)
        for fn in filenames:
            if _skip_part(fn) or not _is_image_name(fn):
                continue
            full = os.path.join(dirpath, fn)
            entries.append((rel + (fn,), full))
    return entries, directories


def _collect_from_tar(path):
    """Read a tar archive in one sequential pass: ``(image entries [(parts, bytes)], the
    directory paths it names)``. A gzip archive is read through gzip.GzipFile to its very
    end, which verifies the CRC of everything read (tarfile's own stream reader does not)."""
    entries, directories = [], set()
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path) if gzipped else open(path, "rb")) as stream, tarfile.open(
            fileobj=stream, mode="r|" if gzipped else "r|*"
        ) as tf:
            for m in tf:
                parts = tuple(p for p in PurePosixPath(m.name).parts if p not in ("", ".", "/"))
                if not parts or any(_skip_part(p) for p in parts) or ".." in parts:
                    continue
                directories.update(parts[:i] for i in range(1, len(parts) + (m.isdir())))
                if not m.isfile() or not _is_image_name(parts[-1]):
                    continue
                if m.size > MAX_MEMBER_BYTES:
                    raise ValueError(f"{m.name!r} in {path} is {m.size} bytes; images larger "
                                     f"than {MAX_MEMBER_BYTES} bytes are refused")
                entries.append((parts, tf.extractfile(m).read()))
            while stream.read(1 << 20):  # to the end, so the gzip trailer is checked
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable tar archive: {e}") from e
    return entries, directories


def _is_tar(path):
    """tarfile.is_tarfile, but a corrupt compressed stream is "not a tar" instead of an
    exception."""
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def _resolve_layout(entries, directories, source):
    """Map ``(parts, payload)`` entries to ``(class_name, display_name, payload)``; every
    directory beside the class directories must hold images too (an empty one would be
    dropped and every later class would shift down one label)."""
    depths = {len(parts) for parts, _ in entries}
    if len(depths) > 1:
        by_depth = {}
        for parts, _ in entries:
            by_depth.setdefault(len(parts), "/".join(parts))
        examples = ", ".join(repr(v) for _, v in sorted(by_depth.items()))
        raise ValueError(
            f"images in {source} lie at different depths (e.g. {examples}); expected every "
            "image at <root>/<class>/<image>"
        )
    depth = depths.pop()
    if depth < 2:
        raise ValueError(
            f"images found directly in {source} (e.g. {'/'.join(entries[0][0])!r}); expected "
            "one sub-directory per class: <root>/<class>/<image>"
        )
    prefixes = {parts[:-2] for parts, _ in entries}
    if len(prefixes) > 1:
        examples = ", ".join(repr("/".join(p) or ".") for p in sorted(prefixes)[:3])
        raise ValueError(
            f"class directories in {source} sit under different parent directories "
            f"({examples}); expected a single <root>/<class>/<image> tree"
        )
    prefix = prefixes.pop()
    classes = {parts[-2] for parts, _ in entries}
    empty = sorted(d[-1] for d in directories if len(d) == len(prefix) + 1
                   and d[:-1] == prefix and d[-1] not in classes)
    if empty:
        raise ValueError(
            f"class folder(s) {', '.join(map(repr, empty))} in {source} hold no images; "
            "remove them or add images (classes are numbered by their sorted folder names)"
        )
    return [(parts[-2], "/".join(parts), payload) for parts, payload in entries]


def _decode_image(payload, display, source, size):
    from PIL import Image

    try:
        data = payload if isinstance(payload, bytes) else Path(payload).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:  # from the header: nothing decoded
                raise ValueError(f"{im.width}x{im.height} pixels exceed the limit of "
                                 f"{MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS)")
            im.load()
            out = im if im.mode == "RGB" else im.convert("RGB")
            if size is not None and out.size != (size[1], size[0]):
                out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(out, dtype=np.uint8)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ValueError(
            f"cannot read image {display!r} in {source}: {type(e).__name__}: {e}"
        ) from e


def load_image_folder(path, image_size=None, progress=False):
    """Load a ``root/<class>/<image>`` tree of images (like torchvision's ImageFolder).

    Inputs:
    - path: a directory, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` (any tarfile compression)
      holding such a tree; archives are read in memory, never extracted to disk. The class
      directories may sit under a common top directory (e.g. ``train/<class>/0001.jpg``): the
      class of an image is the directory that directly contains it, and every image must lie
      at the same depth under a single common parent.
    - image_size: optional ``(H, W)``; every image is resized (bilinear) to it. Without it all
      images must already have the same size.
    - progress: show a tqdm bar (count and ETA) while the images are decoded.

    Images are files ending in one of :data:`IMG_EXTENSIONS` (case-insensitive); other files
    and hidden files/directories are ignored. Images are converted to RGB.

    Returns:
    - X: ``(N, H, W, 3)`` uint8.
    - y: ``(N,)`` int64 class indices.
    - class_names: list of str; class ``i`` is ``class_names[i]``, the folder names sorted as
      strings (as in torchvision ImageFolder). Images are ordered by class, then by file name.

    Raises FileNotFoundError if ``path`` does not exist; ValueError if no images are found,
    the layout is not ``<class>/<image>``, an image cannot be decoded (naming the file) or
    sizes differ without ``image_size`` (naming the odd file).
    """
    source = os.fspath(path)
    if image_size is not None:
        try:
            H, W = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise TypeError(
                f"image_size must be a (H, W) pair of ints, got {image_size!r}"
            ) from None
        if H <= 0 or W <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        image_size = (H, W)
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"image folder or archive not found: {source!r}")
    if p.is_dir():
        entries, directories = _collect_from_dir(p)
    elif _is_tar(p):
        entries, directories = _collect_from_tar(p)
    else:
        raise ValueError(
            f"{source!r} is neither a directory nor a tar archive (.tar, .tar.gz, .tgz)"
        )
    if not entries:
        raise ValueError(
            f"no image files ({', '.join(IMG_EXTENSIONS)}) found in {source!r}; expected "
            "<root>/<class>/<image>"
        )
    items = _resolve_layout(entries, directories, repr(source))
    items.sort(key=lambda t: (t[0], t[1]))
    class_names = sorted({c for c, _, _ in items})
    class_index = {c: i for i, c in enumerate(class_names)}
    n = len(items)
    y = np.fromiter((class_index[c] for c, _, _ in items), dtype=np.int64, count=n)

    X = None
    first_name = None
    for i, (_, display, payload) in enumerate(tqdm(
            items, desc="decoding images", unit="img", leave=False,
            disable=None if progress else True)):
        arr = _decode_image(payload, display, repr(source), image_size)
        if X is None:
            X = np.empty((n,) + arr.shape, dtype=np.uint8)
            first_name = display
        elif arr.shape != X.shape[1:]:
            raise ValueError(
                f"image {display!r} in {source!r} has size {arr.shape[1]}x{arr.shape[0]} "
                f"(WxH) but {first_name!r} has {X.shape[2]}x{X.shape[1]}; pass "
                "image_size=(H, W) to resize all images"
            )
        X[i] = arr
        items[i] = None  # release the encoded bytes as we go
    return X, y, class_names
