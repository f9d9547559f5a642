"""The offline real-data builder used by the tiny recipes and the embedded default pipeline."""

import numpy as np
import pytest
from PIL import Image
from train_utils import TRAINING_DIR, load_script

prep = load_script(TRAINING_DIR / "prepare_offline_data.py")


def test_opencv_sheet_is_cut_into_labelled_cells(tmp_path):
    # A synthetic 2000x1000 sheet whose 20x20 cell (row r, column c) has value r * 5 + c % 5: known answer per cell.
    rows, cols = np.meshgrid(np.arange(50), np.arange(100), indexing="ij")
    values = (rows * 5 + cols % 5).astype(np.uint8)
    sheet = np.kron(values, np.ones((20, 20), dtype=np.uint8))
    Image.fromarray(sheet).save(tmp_path / "digits.png")
    images, labels = prep.opencv_digits(tmp_path / "digits.png", pad=2)
    assert images.shape == (5000, 24, 24) and np.bincount(labels).tolist() == [500] * 10
    assert images[0, 0, 0] == 0 and images[0, 2, 2] == 0  # border, then cell (0, 0)
    assert images[101, 5, 5] == values[1, 1] and labels[101] == 0  # row 1 still belongs to digit 0
    assert images[4999, 10, 10] == values[49, 99] and labels[4999] == 9
    Image.new("L", (10, 10)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="expected OpenCV's 2000x1000"):
        prep.opencv_digits(tmp_path / "small.png", pad=0)


def test_sklearn_digits_dataset_round_trip(tmp_path):
    out = tmp_path / "digits"
    assert prep.main(["digits", "--source", "sklearn", "--output", str(out), "--test-per-class", "5"]) == 0
    from glotok_hf.data import class_names, decode_image, load_image_dataset

    train = load_image_dataset(dataset_name=str(out))
    test = load_image_dataset(dataset_name=str(out), split="test")
    assert len(train) + len(test) == 1797 and len(test) == 50
    assert class_names(train)[7] == "seven"
    assert decode_image(train[0]["image"]).size == (24, 24)
    assert prep.main(["digits", "--source", "sklearn", "--output", str(out)]) == 2  # never overwrites silently
