"""``onnxprune data``: a folder of images to the ``.npz`` that ``--data`` reads, with the
recipes of YOLO, PP-OCR and ImageNet models (:mod:`onnxprune.runtime.images`)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from clirun import assert_bad_input, cli, ok
from onnxprune.runtime.evaluate import load_data
from onnxprune.runtime.images import Recipe, prepare
from onnxprune.runtime.session import graph_input_specs


@pytest.fixture()
def folder(tmp_path):
    """Two classes: three 40x20 red images under cat/, two 30x30 white ones under dog/."""
    for name, count, size, colour in (("cat", 3, (40, 20), (255, 0, 0)), ("dog", 2, (30, 30), (255, 255, 255))):
        (tmp_path / "img" / name).mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", size, colour).save(tmp_path / "img" / name / f"{k}.png")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    return tmp_path / "img"


def model_with_input(path, shape, name="images"):
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_recipes_by_hand():
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    x = prepare(red, Recipe(10, 10, resize="letterbox"))
    assert x.shape == (3, 10, 10)
    assert np.allclose(x[:, 5, 5], [1, 0, 0]) and np.allclose(x[:, 0, 5], 114 / 255)  # gray bands above and below
    x = prepare(red, Recipe(10, 40, resize="pad-right", channels="bgr", normalize="symmetric"))
    assert np.allclose(x[:, 5, 5], [-1, -1, 1])  # BGR, (x/255-0.5)/0.5
    assert np.allclose(x[:, 5, 30], -1)  # 40x20 at height 10 is 20 wide: padded with 0 beyond
    x = prepare(red, Recipe(8, 8, layout="nhwc", normalize="imagenet"))
    assert x.shape == (8, 8, 3) and np.allclose(x[0, 0], (np.array([1, 0, 0]) - (0.485, 0.456, 0.406)) /
                                                (0.229, 0.224, 0.225), atol=1e-5)
    assert prepare(red.convert("L"), Recipe(4, 4, channels="gray", normalize="none")).shape == (1, 4, 4)


def test_a_folder_for_a_model_reads_its_input(tmp_path, folder):
    model = model_with_input(tmp_path / "m.onnx", ["batch", 3, 32, 32])
    out = tmp_path / "calib.npz"
    result = ok(cli("data", folder, "-o", out, "--model", model, "--preset", "yolo", "--labels-from-folders",
                    "--json", tmp_path / "r.json"))
    assert "5 images" in result.output and "2 classes" in result.output
    data = load_data(out, graph_input_specs(onnx.load(model)))
    assert data.inputs["images"].shape == (5, 3, 32, 32) and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert list(np.load(out)["classes"]) == ["cat", "dog"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["recipe"] == {"size": [32, 32], "resize": "letterbox", "channels": "rgb", "layout": "nchw",
                                "normalize": "unit"}
    nhwc = model_with_input(tmp_path / "nhwc.onnx", [1, 24, 24, 3], name="input_1")
    ok(cli("data", folder, "-o", tmp_path / "n.npz", "--model", nhwc, "--limit", "2"))
    assert np.load(tmp_path / "n.npz")["input_1"].shape == (2, 24, 24, 3)


def test_ocr_recipe_with_a_dynamic_width(tmp_path, folder):
    model = model_with_input(tmp_path / "rec.onnx", ["n", 3, 48, "w"], name="x")
    assert_bad_input(cli("data", folder, "-o", tmp_path / "a.npz", "--model", model), "dynamic", "--size")
    ok(cli("data", folder, "-o", tmp_path / "a.npz", "--model", model, "--preset", "ppocr-rec", "--size", "48x320"))
    x = np.load(tmp_path / "a.npz")["x"]
    assert x.shape == (5, 3, 48, 320) and x.min() == -1.0


def test_bad_input(tmp_path, folder):
    image = folder / "cat" / "0.png"
    before = image.read_bytes()
    assert_bad_input(cli("data", image, "-o", image, "--size", "8x8"), "overwrite")
    assert image.read_bytes() == before
    assert_bad_input(cli("data", tmp_path / "missing", "-o", tmp_path / "a.npz", "--size", "8x8"), "no such")
    assert_bad_input(cli("data", folder, "-o", tmp_path / "a.npz"), "--size")
    assert_bad_input(cli("data", folder, "-o", tmp_path / "a.npz", "--size", "8by8"), "HxW")
    (tmp_path / "empty").mkdir()
    assert_bad_input(cli("data", tmp_path / "empty", "-o", tmp_path / "a.npz", "--size", "8x8"), "no image")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert_bad_input(cli("data", broken, "-o", tmp_path / "a.npz", "--size", "8x8"), "cannot read image", "broken.png")
    assert_bad_input(cli("data", folder, "-o", tmp_path / "a.npz", "--size", "8x8", "--channels", "gray",
                         "--normalize", "imagenet"), "three channels")
    model = model_with_input(tmp_path / "m.onnx", ["batch", 3, 32, 32])
    assert_bad_input(cli("data", folder, "-o", tmp_path / "a.npz", "--model", model, "--input", "nope"), "no input")
    assert not (tmp_path / "a.npz").exists()
