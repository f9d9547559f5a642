"""Image decoding of every mode, transforms, imagefolder loading and corrupt-file skipping."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from glotok_hf.data import (
    ImageDataset,
    ImageTransform,
    class_names,
    collate_images,
    decode_image,
    load_image_dataset,
    pil_to_tensor,
    tensor_to_pil,
    to_rgb,
)


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("L", (2, 2), 77), (77, 77, 77)),
        (Image.new("1", (2, 2), 1), (255, 255, 255)),
        (Image.new("RGBA", (2, 2), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("RGBA", (2, 2), (10, 20, 30, 0)), (255, 255, 255)),  # fully transparent -> white background
        (Image.new("LA", (2, 2), (0, 128)), (127, 127, 127)),  # half-transparent black over white
        (Image.new("CMYK", (2, 2), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("I;16", (2, 2), 65535), (255, 255, 255)),  # 16-bit full range, not clipped garbage
        (Image.new("I;16", (2, 2), 32896), (128, 128, 128)),
        (Image.new("I", (2, 2), 200), (200, 200, 200)),  # 8-bit data stored in a 32-bit image
        (Image.new("F", (2, 2), 0.5), (128, 128, 128)),
    ],
    ids=["L", "1", "RGBA-opaque", "RGBA-transparent", "LA", "CMYK", "I16-max", "I16-half", "I", "F"],
)
def test_to_rgb_handles_every_mode(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert rgb.getpixel((0, 0)) == pytest.approx(expected, abs=1)


def test_palette_images_with_and_without_transparency():
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    assert to_rgb(palette).getpixel((0, 0)) == (200, 10, 10)
    palette.info["transparency"] = 1
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_decode_image_from_every_source_and_failures(tmp_path):
    image = Image.new("RGB", (3, 2), (1, 2, 3))
    data = _png_bytes(image)
    (tmp_path / "a.png").write_bytes(data)
    for source in (data, {"bytes": data, "path": None}, {"bytes": None, "path": str(tmp_path / "a.png")},
                   str(tmp_path / "a.png"), tmp_path / "a.png", image):  # fmt: skip
        decoded = decode_image(source)
        assert decoded.mode == "RGB" and decoded.getpixel((2, 1)) == (1, 2, 3)
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    assert decode_image(str(tmp_path / "truncated.png")) is None
    assert decode_image(str(tmp_path / "text.png")) is None
    assert decode_image(str(tmp_path / "missing.png")) is None
    assert decode_image({"bytes": None, "path": None}) is None
    assert decode_image(12) is None


def test_pixel_range_and_round_trip():
    array = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    tensor = pil_to_tensor(Image.fromarray(array))
    assert tensor.shape == (3, 4, 4) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert tensor[0, 0, 0] == -1.0  # value 0 -> -1
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)[0]), array)


def test_image_transform_resizes_crops_and_flips():
    # 8x4 image whose left half is black and right half white: after resizing the short side to 4 and center
    # cropping, the crop spans the middle columns 2..5 -> left half black, right half white.
    array = np.zeros((4, 8, 3), dtype=np.uint8)
    array[:, 4:] = 255
    image = Image.fromarray(array)
    out = ImageTransform(4, center_crop=True)(image)
    assert out.shape == (3, 4, 4)
    assert torch.all(out[:, :, :2] == -1) and torch.all(out[:, :, 2:] == 1)
    torch.manual_seed(0)
    flips = [ImageTransform(4, random_flip=True)(image)[0, 0, 0].item() for _ in range(40)]
    assert 5 < sum(f == 1.0 for f in flips) < 35  # both orientations occur
    upscaled = ImageTransform(16, center_crop=False)(Image.new("L", (5, 7), 9))
    assert upscaled.shape == (3, 16, 16)
    with pytest.raises(ValueError, match="positive int"):
        ImageTransform(0)


def _imagefolder(root, per_class=3, classes=("cat", "dog"), size=(12, 10)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * c, 10 * i, 0)).save(root / name / f"{i}.png")
    return root


def test_load_imagefolder_with_labels(tmp_path):
    root = _imagefolder(tmp_path / "data")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    dataset = load_image_dataset(train_data_dir=root)
    assert len(dataset) == 6 and class_names(dataset) == ["cat", "dog"]
    assert isinstance(dataset[0]["image"], dict)  # undecoded
    torch_dataset = ImageDataset(dataset, ImageTransform(8))
    batch = collate_images([torch_dataset[i] for i in range(len(torch_dataset))])
    assert batch["pixel_values"].shape == (6, 3, 8, 8)
    assert sorted(batch["labels"].tolist()) == [0, 0, 0, 1, 1, 1] and batch["num_skipped"] == 0


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = _imagefolder(tmp_path / "data", per_class=2)
    (root / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dataset = ImageDataset(load_image_dataset(train_data_dir=root), ImageTransform(8))
    with pytest.warns(UserWarning, match="Skipping unreadable image"):
        items = [dataset[i] for i in range(len(dataset))]
    batch = collate_images(items)
    assert batch["pixel_values"].shape == (4, 3, 8, 8)  # same size: replaced by the next readable image
    assert batch["num_skipped"] == 1


def test_all_corrupt_raises(tmp_path):
    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    for i in range(2):
        (root / f"{i}.png").write_bytes(b"broken")
    dataset = ImageDataset(load_image_dataset(train_data_dir=root.parent, label_column=None), ImageTransform(8))
    with pytest.raises(ValueError, match="No image in the dataset could be decoded"), pytest.warns(UserWarning):
        dataset[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "exactly one of"),
        ({"dataset_name": "x", "train_data_dir": "y"}, ValueError, "exactly one of"),
        ({"train_data_dir": "/nonexistent/glotok"}, ValueError, "Found no images under train_data_dir"),
    ],
)
def test_bad_dataset_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_image_dataset(**kwargs)


def test_empty_or_non_image_folder_and_bad_columns(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Found no images"):
        load_image_dataset(train_data_dir=tmp_path / "empty")
    (tmp_path / "text" / "a").mkdir(parents=True)
    (tmp_path / "text" / "a" / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="Found no images"):
        load_image_dataset(train_data_dir=tmp_path / "text")
    root = _imagefolder(tmp_path / "data", per_class=1)
    with pytest.raises(ValueError, match="image_column 'img' is not a column"):
        load_image_dataset(train_data_dir=root, image_column="img")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    with pytest.raises(ValueError, match="label_column 'label' is not a column"):
        load_image_dataset(train_data_dir=flat)
    assert len(load_image_dataset(train_data_dir=flat, label_column=None)) == 1


def test_saved_dataset_folder(tmp_path):
    root = _imagefolder(tmp_path / "data", per_class=1)
    load_image_dataset(train_data_dir=root).save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(dataset_name=str(tmp_path / "saved"))
    assert len(dataset) == 2 and class_names(dataset) == ["cat", "dog"]
