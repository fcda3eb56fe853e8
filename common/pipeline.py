"""The shared ``tf.data`` input pipeline: numpy examples -> seeded crops/augmentations -> batches.

``make_dataset`` turns in-memory examples (see ``common/augment.py`` for the example dict) into
a deterministic ``tf.data.Dataset``:

    source (kept in its own dtype, uint8 stays uint8) -> cache -> shuffle (seeded, new order
    each epoch) -> repeat -> number the stream -> [random_crop] -> float32 in [0, 1] ->
    [augment] -> [to_model] -> batch -> prefetch

The stream position ``g`` (0, 1, 2, ... over all epochs) seeds the crop and the augmentation of
element ``g`` with ``(seed, g)``, so two datasets built with the same arguments yield identical
batches, and every epoch sees new crops and augmentations.

Box/point lists of different lengths are padded with rows of -1 so they batch; every transform
keeps padding at -1 and turns objects that leave the image into padding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from microrepro.common import augment as augment_lib
from microrepro.common.augment import AugmentConfig
from microrepro.common.tiling import tile_origins

AUTOTUNE = tf.data.AUTOTUNE
ANNOTATION_WIDTH = {"boxes": 4, "points": 2}


# ----------------------------------------------------------------------------------------------
# numpy helpers


def pad_annotations(arrays: Sequence[np.ndarray], max_n: int | None = None, fill: float = -1) -> np.ndarray:
    """Stack variable-length annotation arrays into one array padded with ``fill`` (-1).

    Args:
        arrays: ``B`` arrays of shape ``(N_i, D)`` (boxes ``D = 4``, points ``D = 2``) or
            ``(N_i,)`` (labels).
        max_n: rows per example; None uses the largest ``N_i``.
        fill: padding value (-1 marks "no object" across the suite).

    Returns:
        ``(B, max_n, D)`` (or ``(B, max_n)``) array, float32 for 2-D inputs, the input dtype
        for 1-D ones (labels stay int32).

    Raises:
        ValueError: an array has more than ``max_n`` rows or the arrays disagree on ``D``.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("pad_annotations needs at least one array")
    ndims = {a.ndim for a in arrays if a.size}
    if len(ndims) > 1:
        raise ValueError(f"pad_annotations: arrays mix ranks {sorted(ndims)}")
    vector = ndims == {1} or (not ndims and arrays[0].ndim == 1)
    if vector:
        tail: tuple[int, ...] = ()
        dtype = np.result_type(*[a.dtype for a in arrays])
    else:
        widths = {a.shape[-1] for a in arrays if a.size}
        if len(widths) > 1:
            raise ValueError(f"pad_annotations: arrays have different widths {sorted(widths)}")
        tail = (widths.pop() if widths else arrays[0].shape[-1],)
        dtype = np.float32
    arrays = [a.reshape((-1,) + tail) for a in arrays]
    longest = max(len(a) for a in arrays)
    if max_n is None:
        max_n = longest
    elif longest > max_n:
        raise ValueError(f"pad_annotations: an example has {longest} rows, more than max_n={max_n}")
    out = np.full((len(arrays), max_n) + tail, fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _size_pair(size, name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def crop_origins(height: int, width: int, size, stride) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of overlapping crops that cover a ``height × width`` image.

    Along each axis crops start every ``stride`` pixels and the last one is moved back so it
    ends flush with the image (a 1600 × 1200 image gives 4 × 3 = 12 crops of 512 at stride 400,
    as in the cell_counting paper). An axis shorter than the crop gives one origin, 0.

    Args:
        height, width: image size in pixels.
        size: crop size, int or ``(h, w)``.
        stride: step between crops, int or ``(sy, sx)``, ``0 < stride <= size``.

    Returns:
        Row-major list of ``(y, x)``.

    Reference:
        cell_counting paper Sec. 4.1 ("twelve 512x512 partially overlapping crops").
    """
    ch, cw = _size_pair(size, "size")
    sy, sx = _size_pair(stride, "stride")
    if sy > ch or sx > cw:
        raise ValueError(f"stride {stride!r} must not exceed the crop size {size!r} (crops would leave gaps)")
    ys = tile_origins(int(height), ch, ch - sy)
    xs = tile_origins(int(width), cw, cw - sx)
    return [(y, x) for y in ys for x in xs]


def extract_crops(image: np.ndarray, size, stride) -> np.ndarray:
    """Cut ``image`` into the overlapping crops of ``crop_origins`` (same order).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (an image, a mask, a weight map...).
        size: crop size, int or ``(h, w)``.
        stride: step, int or ``(sy, sx)``.

    Returns:
        ``(n, h, w)`` or ``(n, h, w, C)`` array of ``image``'s dtype. An image smaller than the
        crop is zero-padded at the bottom/right first (so masks and images stay aligned).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"extract_crops expects an (H, W) or (H, W, C) array, got shape {image.shape}")
    ch, cw = _size_pair(size, "size")
    pad = [(0, max(ch - image.shape[0], 0)), (0, max(cw - image.shape[1], 0))] + [(0, 0)] * (image.ndim - 2)
    if any(p[1] for p in pad):
        image = np.pad(image, pad)
    origins = crop_origins(image.shape[0], image.shape[1], (ch, cw), stride)
    return np.stack([image[y : y + ch, x : x + cw] for y, x in origins])


def example_from_sample(sample, *, mask: str | None = "binary") -> dict:
    """Turn a ``datasets.base.Sample`` into an example dict of numpy arrays.

    Args:
        sample: a ``Sample`` (image read lazily here).
        mask: ``"binary"`` adds ``mask`` ``(H, W, 1)`` uint8 0/1 when the sample has one,
            ``"instances"`` adds the int32 instance labels, None leaves it out.

    Returns:
        ``{"image", "boxes", "points", "labels"[, "mask"]}``; ``labels`` pair with the boxes
        when there are any, else with the points.
    """
    if mask not in (None, "binary", "instances"):
        raise ValueError(f"mask must be None, 'binary' or 'instances', got {mask!r}")
    image = sample.image
    out = {"image": image, "boxes": sample.boxes, "points": sample.points, "labels": sample.labels}
    if mask is not None:
        labels = sample.mask
        if labels is not None:
            sample.check_mask_size(image, labels)
            out["mask"] = (labels > 0).astype(np.uint8) if mask == "binary" else labels.astype(np.int32)
    return out


# ----------------------------------------------------------------------------------------------
# tensor ops


def random_crop(example: dict, size, seed, interpolation: dict | None = None) -> dict:
    """Crop a random ``size`` window from every dense key; shift, clip and drop annotations.

    Points are kept when they lie on a pixel of the crop; a box is kept when its centre lies in
    the crop and is then clipped to it; the others become -1 rows (labels -1). An image smaller
    than the crop is zero-padded at the bottom/right first (padding carries no annotation).

    Args:
        example: dict of tensors (see ``common/augment.py``): ``image`` ``(H, W, C)``, optional
            ``mask``/``weights`` ``(H, W, K)``, ``boxes`` ``(N, 4)`` xyxy px, ``points``
            ``(N, 2)`` [x, y] px, ``labels`` ``(N,)``.
        size: crop size, int or ``(h, w)``.
        seed: ``(2,)`` int seed (stateless: same seed, same window).
        interpolation: extra dense keys to crop (as in ``AugmentConfig.interpolation``).

    Returns:
        A new dict whose dense keys are ``(h, w, K)``.
    """
    ch, cw = _size_pair(size, "size")
    seed = tf.ensure_shape(tf.reshape(tf.cast(seed, tf.int64), [-1]), [2])
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    height, width = augment_lib.height_width(example["image"])
    height, width = tf.maximum(height, ch), tf.maximum(width, cw)
    y0 = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=height - ch + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=width - cw + 1, dtype=tf.int32)
    fx, fy = tf.cast(x0, tf.float32), tf.cast(y0, tf.float32)

    def dense(tensor, mode):
        h, w = augment_lib.height_width(tensor)
        tensor = tf.pad(tensor, [[0, tf.maximum(ch - h, 0)], [0, tf.maximum(cw - w, 0)], [0, 0]])
        return tf.ensure_shape(tensor[y0 : y0 + ch, x0 : x0 + cw], [ch, cw, tensor.shape[-1]])

    def points(p, h, w):
        q = p - tf.stack([fx, fy])
        qx, qy = tf.unstack(q, axis=1)
        keep = (qx >= -0.5) & (qx < cw - 0.5) & (qy >= -0.5) & (qy < ch - 0.5)
        return q, keep

    def boxes(b, h, w):
        q = b - tf.stack([fx, fy, fx, fy])
        x1, y1, x2, y2 = tf.unstack(q, axis=1)
        centre_x, centre_y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        keep = (centre_x >= 0) & (centre_x < cw) & (centre_y >= 0) & (centre_y < ch)
        limits = tf.constant([cw, ch, cw, ch], tf.float32)
        return tf.clip_by_value(q, 0.0, limits), keep

    return augment_lib.apply_geometric(example, dense, points, boxes, interpolation)


# ----------------------------------------------------------------------------------------------
# the dataset


def _dense_map(value: np.ndarray, rank: int, must: str) -> np.ndarray:
    """A dense map with its channel axis (added when missing), bool as uint8; ``must`` says the shapes."""
    if value.ndim == rank - 1:
        value = value[..., None]
    if value.ndim != rank:
        raise ValueError(f"{must}, got shape {value.shape}")
    return value.astype(np.uint8) if value.dtype == bool else value


def _as_example(raw: Mapping, where: str, dense: set[str]) -> dict[str, np.ndarray]:
    """Check one example's keys/shapes and give dense maps a channel axis."""
    if not isinstance(raw, Mapping):
        hint = " (convert a Sample with example_from_sample)" if hasattr(raw, "image_path") else ""
        raise ValueError(f"{where}: expected a dict of arrays, got {type(raw).__name__}{hint}")
    if "image" not in raw:
        raise ValueError(f"{where}: an example needs an 'image' key, got keys {sorted(raw)}")
    out = {}
    for key, value in raw.items():
        value = np.asarray(value)
        if key in dense:
            value = _dense_map(value, 3, f"{where}: {key!r} must be (H, W) or (H, W, C)")
        elif key in ANNOTATION_WIDTH:
            width = ANNOTATION_WIDTH[key]
            if value.size % width:
                raise ValueError(f"{where}: {key!r} must have shape (N, {width}), got {value.shape}")
            value = value.astype(np.float32).reshape(-1, width)
        elif key == "labels":
            value = value.astype(np.int32).reshape(-1)
        out[key] = value
    for key in dense - {"image"}:
        if key in out and out[key].shape[:2] != out["image"].shape[:2]:
            raise ValueError(f"{where}: {key!r} is {out[key].shape[:2]} but the image is {out['image'].shape[:2]}")
    return out


def _label_owner(keys) -> str | None:
    return next((k for k in ("boxes", "points") if k in keys), None)


def _from_list(examples: Sequence[Mapping], dense: set[str], max_annotations: int | None):
    """List of dicts -> (generator dataset, image dtype, whether all image sizes agree)."""
    items = [_as_example(ex, f"example {i}", dense) for i, ex in enumerate(examples)]
    keys = set(items[0])
    for i, ex in enumerate(items):
        if set(ex) != keys:
            raise ValueError(f"example {i} has keys {sorted(ex)} but example 0 has {sorted(keys)}")
    pad_to = {}
    for key in ("boxes", "points"):
        if key in keys:
            pad_to[key] = max_annotations or max(1, max(len(ex[key]) for ex in items))
    owner = _label_owner(keys)
    if "labels" in keys:
        pad_to["labels"] = pad_to[owner] if owner else max(1, max(len(ex["labels"]) for ex in items))
    for key, n in pad_to.items():
        padded = pad_annotations([ex[key] for ex in items], n)
        for ex, row in zip(items, padded, strict=True):
            ex[key] = row
    signature = {}
    for key in sorted(keys):
        shapes = {ex[key].shape for ex in items}
        dtypes = {ex[key].dtype for ex in items}
        ranks = {len(s) for s in shapes}
        if len(dtypes) > 1 or len(ranks) > 1:
            raise ValueError(
                f"examples disagree on the dtype or rank of {key!r}: {sorted(map(str, dtypes))}, {sorted(ranks)}"
            )
        dims = [dim.pop() if len(dim) == 1 else None for dim in (set(s[j] for s in shapes) for j in range(ranks.pop()))]
        if key in dense and dims[-1] is None:
            raise ValueError(f"examples disagree on the channel count of {key!r}")
        signature[key] = tf.TensorSpec(dims, tf.as_dtype(dtypes.pop()))
    same_size = signature["image"].shape[0] is not None and signature["image"].shape[1] is not None

    def generate():
        yield from items

    return tf.data.Dataset.from_generator(generate, output_signature=signature), items[0]["image"].dtype, same_size


def _from_arrays(examples: Mapping, dense: set[str], max_annotations: int | None):
    """Dict of equally long arrays -> (tensor-slices dataset, image dtype)."""
    if "image" not in examples:
        raise ValueError(f"examples need an 'image' array, got keys {sorted(examples)}")
    lengths = {key: len(value) for key, value in examples.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"example arrays must be equally long, got lengths {lengths}")
    arrays = {}
    owner = _label_owner(examples)
    for key, value in examples.items():
        if key in ANNOTATION_WIDTH or key == "labels":
            if isinstance(value, np.ndarray) and value.dtype != object and max_annotations is None:
                # Already (B, N, D): keep the caller's padding.
                value = value.astype(np.int32 if key == "labels" else np.float32)
            else:
                n = max_annotations
                if key == "labels" and owner is not None:
                    n = max_annotations or max(1, max(len(v) for v in examples[owner]))
                tail = (ANNOTATION_WIDTH[key],) if key in ANNOTATION_WIDTH else ()
                value = pad_annotations([np.asarray(v).reshape((-1,) + tail) for v in value], n)
            arrays[key] = value
            continue
        value = np.asarray(value)
        if key in dense:
            value = _dense_map(value, 4, f"examples[{key!r}] must be (B, H, W) or (B, H, W, C)")
        arrays[key] = value
    for key in dense - {"image"}:
        if key in arrays and arrays[key].shape[1:3] != arrays["image"].shape[1:3]:
            raise ValueError(
                f"examples[{key!r}] is {arrays[key].shape[1:3]} but images are {arrays['image'].shape[1:3]}"
            )
    return tf.data.Dataset.from_tensor_slices(arrays), arrays["image"].dtype


def _to_float(image: tf.Tensor, dtype: np.dtype) -> tf.Tensor:
    """Integer images -> float32 in [0, 1] by their dtype's range (as ``imageio.to_float01``)."""
    if np.issubdtype(dtype, np.integer):
        return tf.cast(image, tf.float32) / np.float32(np.iinfo(dtype).max)
    return tf.cast(image, tf.float32)


def make_dataset(
    examples: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    repeat: bool = True,
    crop_size=None,
    to_model: Callable[[dict], tuple] | None = None,
    drop_remainder: bool = True,
    cache: bool = True,
    max_annotations: int | None = None,
) -> tf.data.Dataset:
    """Build the seeded, deterministic ``tf.data`` pipeline used by every paper.

    Args:
        examples: either a dict of equally long arrays (``image`` ``(B, H, W[, C])``, ``mask``,
            ``weights``, ``boxes`` ``(B, N, 4)`` or a list of ``(N_i, 4)`` arrays, ``points``,
            ``labels``...), or a list of example dicts of numpy arrays whose images may differ in
            size (then give ``crop_size``, or ``batch_size=1``). Images keep their dtype in
            memory (uint8 stays uint8) and become float32 in [0, 1] per element; masks and
            weights are cast to float32 unscaled (give masks as 0/1, not 0/255).
        batch_size: examples per batch.
        shuffle: new seeded order every epoch (buffer = the whole data set).
        seed: seeds the shuffle, the crops and the augmentations.
        augment: ``AugmentConfig`` applied after cropping, or None.
        repeat: repeat forever (then give keras ``steps_per_epoch``).
        crop_size: int or ``(h, w)``: a random crop per element (``random_crop``), done before
            augmentation so augmentations work on the small crop.
        to_model: python function of the element dict of tensors (unbatched, after
            augmentation) returning what ``keras.Model.fit`` takes: ``(x, y)`` or
            ``(x, y, sample_weight)``. None yields the dicts.
        drop_remainder: drop a last partial batch (static batch shape for the model).
        cache: cache the decoded source elements in memory after the first epoch.
        max_annotations: pad boxes/points/labels to this many rows (static shapes shared by
            train and validation sets); None pads to the largest count.

    Returns:
        A ``tf.data.Dataset`` of batched dicts (or of ``to_model``'s tuples), prefetched,
        with ``options.deterministic = True``.

    Raises:
        ValueError: inconsistent arrays, images of different sizes with ``batch_size > 1`` and
            no ``crop_size``, bad sizes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
    interpolation = dict(augment.interpolation) if augment is not None else {}
    dense = set(augment_lib.DEFAULT_INTERPOLATION) | set(interpolation)
    if crop_size is not None:
        crop_size = _size_pair(crop_size, "crop_size")

    if isinstance(examples, Mapping):
        source, image_dtype = _from_arrays(examples, dense, max_annotations)
        count = len(examples["image"])
    elif isinstance(examples, Sequence) and not isinstance(examples, (str, bytes)):
        if not examples:
            raise ValueError("make_dataset got an empty list of examples")
        source, image_dtype, same_size = _from_list(examples, dense, max_annotations)
        count = len(examples)
        if not same_size and crop_size is None and batch_size > 1:
            sizes = sorted({np.asarray(ex["image"]).shape[:2] for ex in examples})[:2]
            raise ValueError(
                f"images differ in size (e.g. {sizes[0]} and {sizes[1]}): give crop_size or batch_size=1"
            )
    else:
        raise ValueError(f"examples must be a dict of arrays or a list of dicts, got {type(examples).__name__}")
    if count == 0:
        raise ValueError("make_dataset got no examples")

    dataset = source.cache() if cache else source
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.enumerate()
    if to_model is not None:
        try:
            # The user's function may use python control flow on tensors: let AutoGraph convert
            # it, while our own code below is plain TF ops and skips AutoGraph (much faster to trace).
            to_model = tf.autograph.to_graph(to_model)
        except Exception:  # noqa: BLE001 - callables AutoGraph cannot read run as they are
            pass

    @tf.autograph.experimental.do_not_convert
    def prepare(position, example):
        # (seed, stream position) seeds this element; separate sub-seeds for crop and augment.
        element_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])
        crop_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, num=2))
        example = dict(example)
        if crop_size is not None:
            example = random_crop(example, crop_size, crop_seed, interpolation)
        example["image"] = _to_float(example["image"], image_dtype)
        for key in dense - {"image"}:
            if key in example:
                example[key] = tf.cast(example[key], tf.float32)
        if augment is not None:
            example = augment_lib.augment(example, augment, augment_seed)
        if to_model is not None:
            return to_model(example)
        return example

    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return shard_by_data(dataset.with_options(options))


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.distribute auto-sharding by DATA (each worker keeps its share of the elements).

    Under MultiWorkerMirroredStrategy tf.data shards a pipeline over the workers by FILE when it can;
    the papers' pipelines are built from in-memory arrays and generators, which have no files, so
    every worker builds the same seeded pipeline and keeps every n-th element. One device and
    MirroredStrategy ignore the option. Every ``tf.data`` pipeline a paper builds ends with this.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def pipeline_throughput(dataset: tf.data.Dataset, n_batches: int = 20, warmup: int = 2) -> dict:
    """Time the input pipeline alone (no model), after ``warmup`` batches.

    Args:
        dataset: a batched dataset (elements: dicts or tuples whose first tensor is batched).
        n_batches: batches to time (fewer if the dataset ends first).
        warmup: batches drawn before timing (fills caches and the prefetch buffer).

    Returns:
        ``{"images_per_s", "batches_per_s", "seconds", "batches", "images"}``.

    Raises:
        ValueError: the dataset had no batch left to time.
    """
    if n_batches < 1 or warmup < 0:
        raise ValueError(f"n_batches must be >= 1 and warmup >= 0, got {n_batches}, {warmup}")
    iterator = iter(dataset)
    for _ in range(warmup):
        if next(iterator, None) is None:
            break
    batches = images = 0
    start = time.perf_counter()
    for _ in range(n_batches):
        element = next(iterator, None)
        if element is None:
            break
        batches += 1
        images += int(tf.nest.flatten(element)[0].shape[0])
    seconds = time.perf_counter() - start
    if batches == 0:
        raise ValueError("pipeline_throughput: the dataset yielded no batch after the warm-up")
    return {
        "images_per_s": images / seconds,
        "batches_per_s": batches / seconds,
        "seconds": seconds,
        "batches": batches,
        "images": images,
    }
