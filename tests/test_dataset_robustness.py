"""Bad input to the dataset reader: every failure is a DatasetError naming the file, nothing else escapes.

* ``dataset.json``: property-based (hypothesis) -- both formats, class_names, random JSON and bytes,
  labels for absent files, negative/float/bool/huge labels, the ``max_classes`` limit;
* images: truncated PNG/JPEG (at every cut point) and headers claiming absurd sizes (2**20 x 2**20).

A tiny folder (three 4x4 PNGs) is shared by the hypothesis tests; each example rewrites its dataset.json.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylegan2_ada.dataset import (
    MAX_IMAGE_PIXELS,
    DatasetError,
    DatasetLabels,
    ImageDataset,
    ImageDecodeError,
    decode_image,
    open_image_dataset,
    parse_dataset_json,
)
from tests.test_dataset import png_bytes, write_png, zip_folder

FILES = ["a.png", "c.png", "sub/b.png"]  # sorted, as the dataset lists them
SPELLINGS = {
    "a.png": ["a.png", "./a.png"],
    "c.png": ["c.png", "x/../c.png"],
    "sub/b.png": ["sub/b.png", "sub\\b.png"],
}
MAX_CLASSES = 8
# database=None: no .hypothesis folder in the checkout; the seed of a failure is printed instead.
FUZZ = settings(max_examples=150, deadline=None, database=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for i, rel in enumerate(FILES):
        write_png(root / rel, np.full((4, 4), 60 * i, dtype=np.uint8))
    return root


def open_with(folder: Path, text: str | bytes, **kwargs) -> ImageDataset:
    path = folder / "dataset.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return open_image_dataset(folder, use_labels=True, max_classes=MAX_CLASSES, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and +-inf included: json.dumps writes them as NaN/Infinity, which json reads
    st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
paths = st.one_of(
    st.sampled_from([s for spellings in SPELLINGS.values() for s in spellings]),
    st.sampled_from(["gone.png", "", ".", "../a.png", "/a.png", "sub", "labels", "class_names"]),
    st.text(max_size=6),
)
labels_any = st.one_of(
    st.integers(min_value=0, max_value=MAX_CLASSES + 2),
    st.integers(min_value=-3, max_value=2**70),
    st.floats(),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, 1e300, True, False, None, [], "1"]),
    st.lists(st.one_of(st.floats(), st.integers(), st.booleans()), max_size=3),
    st.lists(st.sampled_from([0.5, 3.4e38, 3.5e38, -1e300, 2**128, float("nan")]), min_size=1, max_size=2),
    json_values,
)
class_names_any = st.one_of(st.lists(st.text(max_size=4), max_size=MAX_CLASSES + 2), json_values)


@st.composite
def documents(draw: st.DrawFn) -> object:
    """A dataset.json object: near-valid in either format, or anything JSON can hold."""
    kind = draw(st.sampled_from(["flat", "upstream", "upstream-garbage-entries", "any"]))
    if kind == "any":
        return draw(json_values)
    pairs = draw(st.lists(st.tuples(paths, labels_any), max_size=6))
    if kind == "flat":
        doc: dict[str, object] = dict(pairs)
    elif kind == "upstream":
        doc = {"labels": draw(st.one_of(st.just([list(p) for p in pairs]), st.none(), json_values))}
    else:
        entries = [list(p) for p in pairs] + draw(st.lists(json_values, max_size=3))
        doc = {"labels": draw(st.permutations(entries))}
    if draw(st.booleans()):
        doc["class_names"] = draw(class_names_any)
    return doc


def check_parsed(info: DatasetLabels) -> None:
    """What parse_dataset_json promises about anything it accepts."""
    assert info.format in ("flat", "upstream")
    if info.labels is None:
        assert info.kind is None
        return
    values = list(info.labels.values())
    assert all("\\" not in k and not k.startswith("./") for k in info.labels)
    if info.kind == "int":
        assert all(type(v) is int and v >= 0 for v in values)
        assert info.label_dim == max(max(values) + 1, len(info.class_names or []))
    elif info.kind == "vector":
        assert all(isinstance(v, tuple) and len(v) == info.label_dim for v in values)
        assert np.isfinite(np.asarray(values, dtype=np.float32)).all()
    else:
        assert values == []


# ---------------------------------------------------------------------------------------------------
# dataset.json: anything -> labels or a DatasetError naming the file


@FUZZ
@given(doc=documents())
@example(doc={"labels": None, "class_names": [str(i) for i in range(MAX_CLASSES + 1)]})  # found by the fuzz
def test_parse_any_json_gives_labels_or_a_dataset_error(doc: object) -> None:
    text = json.dumps(doc)
    try:
        info = parse_dataset_json(text, "where/dataset.json", max_classes=MAX_CLASSES)
    except DatasetError as err:
        assert str(err).startswith("where/dataset.json: ")
    else:
        check_parsed(info)
        assert info.label_dim <= MAX_CLASSES


@FUZZ
@given(data=st.one_of(st.binary(max_size=40), documents().map(lambda d: json.dumps(d)[:-1].encode())))
def test_parse_any_bytes_gives_labels_or_a_dataset_error(data: bytes) -> None:
    try:
        check_parsed(parse_dataset_json(data, "w"))
    except DatasetError as err:
        assert str(err).startswith("w: ")


@FUZZ
@given(doc=documents())
def test_open_with_any_json_gives_a_dataset_or_a_dataset_error(folder: Path, doc: object) -> None:
    try:
        ds = open_with(folder, json.dumps(doc))
    except DatasetError as err:
        assert str(err).startswith(str(folder / "dataset.json"))
        return
    info = parse_dataset_json(json.dumps(doc), "x")
    assert len(ds) == 3 and 0 < ds.label_dim <= MAX_CLASSES
    for i, rel in enumerate(FILES):
        image, label = ds[i]
        assert image.shape == (1, 4, 4) and label.shape == (ds.label_dim,) and label.dtype == np.float32
        expected = info.labels[rel]
        if info.kind == "int":
            assert label.sum() == 1 and label[expected] == 1 and ds.raw_labels[i] == expected
        else:
            np.testing.assert_array_equal(label, np.asarray(expected, dtype=np.float32))


@FUZZ
@given(
    classes=st.lists(st.integers(0, MAX_CLASSES - 4), min_size=3, max_size=3),
    spelling=st.lists(st.integers(0, 1), min_size=3, max_size=3),
    extra_names=st.integers(0, 3),
    nulls=st.booleans(),
)
def test_both_formats_give_the_same_one_hot_labels(
    folder: Path, classes: list[int], spelling: list[int], extra_names: int, nulls: bool
) -> None:
    keys = [SPELLINGS[rel][s] for rel, s in zip(FILES, spelling)]
    names = [f"class{k}" for k in range(max(classes) + 1 + extra_names)] if extra_names or nulls else None
    entries: list[list[object]] = [[k, c] for k, c in zip(keys, classes)]
    if nulls:  # a null label counts as missing: harmless next to a real one for the same file
        entries.append([FILES[0], None])
    flat: dict[str, object] = dict(zip(keys, classes))
    upstream: dict[str, object] = {"labels": entries}
    for doc in (flat, upstream):
        if names is not None:
            doc["class_names"] = names
        ds = open_with(folder, json.dumps(doc))
        dim = max(max(classes) + 1, len(names or []))
        assert ds.label_dim == dim and ds.class_names == names
        np.testing.assert_array_equal(ds.raw_labels, classes)
        np.testing.assert_array_equal(np.stack([ds[i][1] for i in range(3)]), np.eye(dim)[classes])


@FUZZ
@given(
    vectors=st.integers(1, 4).flatmap(
        lambda d: st.lists(
            st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=d, max_size=d),
            min_size=3,
            max_size=3,
        )
    )
)
def test_vector_labels_are_kept_as_float32(folder: Path, vectors: list[list[float]]) -> None:
    ds = open_with(folder, json.dumps({"labels": [[f, v] for f, v in zip(FILES, vectors)]}))
    assert ds.label_dim == len(vectors[0]) and ds.class_counts() is None
    np.testing.assert_array_equal(ds.raw_labels, np.asarray(vectors, dtype=np.float32))


@FUZZ
@given(label=st.one_of(labels_any, st.integers(MAX_CLASSES - 2, MAX_CLASSES + 2)))
def test_one_label_is_accepted_exactly_when_it_is_a_class_index_within_the_limit(folder: Path, label) -> None:
    doc = {"a.png": label, "c.png": 0, "sub/b.png": 1}
    if isinstance(label, float) and math.isfinite(label) and label.is_integer():
        label_int: object = int(label)
    else:
        label_int = label
    valid = type(label_int) is int and 0 <= label_int < MAX_CLASSES
    try:
        ds = open_with(folder, json.dumps(doc))
    except DatasetError as err:
        assert not valid, err
        assert str(err).startswith(str(folder / "dataset.json"))
    else:
        assert valid and ds.raw_labels[0] == label_int


@FUZZ
@given(
    gone=st.lists(
        st.text("abcdefgh", min_size=1, max_size=4).map(lambda s: s + ".png"), min_size=1, unique=True
    )
)
def test_labels_for_files_not_in_the_dataset_are_named(folder: Path, gone: list[str]) -> None:
    doc = {rel: 0 for rel in FILES} | {g: 1 for g in gone if g not in FILES}
    absent = sorted(g for g in gone if g not in FILES)
    if not absent:
        return
    with pytest.raises(DatasetError) as err:
        open_with(folder, json.dumps(doc))
    msg = str(err.value)
    assert f"{len(absent)} labels name files that are not in the dataset {folder}" in msg
    assert all(g in msg for g in absent[:5])
    assert (f"({len(absent) - 5} more)" in msg) == (len(absent) > 5)


def test_json_that_python_cannot_read_is_a_dataset_error() -> None:
    for text, pattern in [
        ("[" * 100_000, "nested too deeply"),
        ('{"a.png": ' + "9" * 5000 + "}", "unreadable JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ]:
        with pytest.raises(DatasetError, match=pattern):
            parse_dataset_json(text, "x")


# ---------------------------------------------------------------------------------------------------
# The class-count limit


def test_one_huge_label_is_refused_naming_it_the_file_and_the_override(folder: Path) -> None:
    doc = {"labels": [["a.png", 0], ["c.png", 1000000], ["sub/b.png", 1]]}
    with pytest.raises(DatasetError) as err:
        open_with(folder, json.dumps(doc))
    msg = str(err.value)
    assert msg.startswith(f"{folder / 'dataset.json'}: label 1000000 for 'c.png' means 1000001 classes")
    assert f"more than the limit of {MAX_CLASSES}" in msg and "--max-classes" in msg
    ds = open_image_dataset(folder, use_labels=True, max_classes=1000001)  # the override
    assert ds.label_dim == 1000001 and ds[1][1][1000000] == 1 and ds[1][1].sum() == 1
    assert ImageDataset(**ds.init_kwargs).label_dim == 1000001  # the limit travels with the dataset


def test_default_limit_and_other_sources_of_label_dim(folder: Path) -> None:
    (folder / "dataset.json").write_text(json.dumps({"a.png": 1000, "c.png": 0, "sub/b.png": 1}))
    with pytest.raises(DatasetError, match=r"means 1001 classes, more than the limit of 1000"):
        open_image_dataset(folder, use_labels=True)  # DEFAULT_MAX_CLASSES
    names = {"a.png": 0, "c.png": 0, "sub/b.png": 1, "class_names": [str(i) for i in range(MAX_CLASSES + 1)]}
    with pytest.raises(DatasetError, match=rf'"class_names" lists {MAX_CLASSES + 1} classes, more than'):
        open_with(folder, json.dumps(names))
    vectors = {rel: [0.0] * (MAX_CLASSES + 1) for rel in FILES}
    with pytest.raises(DatasetError, match=rf"vector labels have {MAX_CLASSES + 1} values .*more than"):
        open_with(folder, json.dumps(vectors))
    for bad in (0, -1, True, 2.5, None):
        with pytest.raises(DatasetError, match="max_classes must be a positive integer"):
            open_image_dataset(folder, use_labels=True, max_classes=bad)


# ---------------------------------------------------------------------------------------------------
# Images: truncated bodies, absurd headers


def jpeg_bytes(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **save)
    return buf.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG ``data`` with its IHDR claiming ``width`` x ``height`` (checksum fixed)."""
    out = bytearray(data)
    out[16:24] = struct.pack(">II", width, height)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The baseline JPEG ``data`` with its frame header (SOF0) claiming ``width`` x ``height``."""
    out = bytearray(data)
    sof = out.index(b"\xff\xc0")
    out[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(out)


@pytest.mark.parametrize("kind", ["png", "png16", "jpeg", "progressive-jpeg"])
def test_every_truncation_gives_an_image_decode_error_or_the_exact_pixels(kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind.startswith("png"):
        arr = rng.integers(0, 65536 if kind == "png16" else 256, (8, 8)).astype(
            np.uint16 if kind == "png16" else np.uint8
        )
        data = png_bytes(arr)
    else:
        data = jpeg_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), progressive=kind != "jpeg")
    full = decode_image(data, "f")
    backends = ("pyspng", "pillow") if kind.startswith("png") else ("auto",)
    for cut in range(len(data)):
        for backend in backends:
            try:
                arr = decode_image(data[:cut], "cut.img", backend=backend)
            except ImageDecodeError as err:
                assert err.path == "cut.img" and err.reason and str(err) == f"cut.img: {err.reason}"
            else:  # only the trailing checksum / end marker was lost: the pixels are all there
                np.testing.assert_array_equal(arr, full)


@pytest.mark.parametrize("container", ["folder", "zip"])
def test_truncated_images_raise_image_decode_error_from_getitem(tmp_path: Path, container: str) -> None:
    rng = np.random.default_rng(1)
    d = tmp_path / "d"
    write_png(d / "good.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    (d / "cut.png").write_bytes(png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))[:-40])
    jpeg = jpeg_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    assert jpeg.index(b"\xff\xc0") < len(jpeg) // 2  # the frame header survives the cut
    (d / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    path = d if container == "folder" else zip_folder(d, tmp_path / "d.zip")
    ds = open_image_dataset(path)  # the headers are intact
    assert [ds.relpath(i) for i in range(3)] == ["cut.jpg", "cut.png", "good.png"]
    for i in (0, 1):
        with pytest.raises(ImageDecodeError) as err:
            ds[i]
        where = str(d / ds.relpath(i)) if container == "folder" else f"{ds.relpath(i)} in {path}"
        assert err.value.path == where and "corrupt" in err.value.reason
    assert ds[2][0].shape == (1, 32, 32)


def test_image_decode_error_keeps_its_fields_across_pickle_and_dataloader_workers(tmp_path: Path) -> None:
    err = pickle.loads(pickle.dumps(ImageDecodeError("x/a.png", "corrupt PNG")))
    assert isinstance(err, DatasetError) and (err.path, err.reason) == ("x/a.png", "corrupt PNG")
    assert str(err) == "x/a.png: corrupt PNG"
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "b.png").write_bytes(png_bytes(np.ones((8, 8), dtype=np.uint8))[:-30])
    loader = torch.utils.data.DataLoader(open_image_dataset(tmp_path), batch_size=2, num_workers=1)
    with pytest.raises(ImageDecodeError, match=r"b\.png: corrupt"):  # the type survives the worker
        next(iter(loader))


@pytest.mark.parametrize("side", [2**20, 2**15, 2**31 - 1])
def test_png_header_claiming_an_absurd_size_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    write_png(tmp_path / "ok.png", np.zeros((8, 8), dtype=np.uint8))
    data = with_png_size(png_bytes(np.zeros((8, 8), dtype=np.uint8)), side, side)
    (tmp_path / "huge.png").write_bytes(data)
    with pytest.raises(DatasetError) as err:
        open_image_dataset(tmp_path)
    msg = str(err.value)
    assert "1 of 2 images cannot be used" in msg
    assert f"{tmp_path / 'huge.png'}: PNG header says {side}x{side} (W x H)" in msg
    assert f"more than the {MAX_IMAGE_PIXELS}" in msg
    with pytest.raises(ImageDecodeError, match=r"PNG header says"):
        decode_image(data, "huge.png")


@pytest.mark.parametrize("side", [2**16 - 1, 2**15])
def test_jpeg_header_claiming_an_absurd_size_is_refused(tmp_path: Path, side: int) -> None:
    data = with_jpeg_size(jpeg_bytes(np.zeros((8, 8), dtype=np.uint8)), side, side)
    (tmp_path / "huge.jpg").write_bytes(data)
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'huge.jpg'}: JPEG too large to decode"):
        open_image_dataset(tmp_path)


def test_zip_member_with_a_bad_checksum_is_an_image_decode_error(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (128, 128), dtype=np.uint8)
    write_png(tmp_path / "d" / "a.png", noise)  # ~16 KB: the header check reads only its first block
    zpath = zip_folder(tmp_path / "d", tmp_path / "d.zip")
    raw = bytearray(zpath.read_bytes())
    raw[raw.index(b"IEND") - 100] ^= 0xFF  # late in the stored member's pixel data
    zpath.write_bytes(bytes(raw))
    ds = open_image_dataset(zpath)
    with pytest.raises(ImageDecodeError, match=rf"a\.png in {zpath}: cannot read file: .*CRC"):
        ds[0]
    assert zipfile.ZipFile(zpath).testzip() == "a.png"  # the damage is real, not a reader quirk
