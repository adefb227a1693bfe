"""``onnxprune data``: the ``.npz`` that ``--data`` reads, from a folder of images.

The recipe (size, resize, channel order, layout, normalization) is read from the model's input
where ``--model`` is given, and from ``--preset`` and the options; see
:mod:`onnxprune.runtime.images`.
"""

from __future__ import annotations

import click

from .common import Output, handle_errors, json_text, output_options

RESIZE = ("stretch", "letterbox", "pad-right")
CHANNELS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")
NORMALIZE = ("unit", "symmetric", "imagenet", "none")


def _size(text: str | None):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW (e.g. 320x320), got {text!r}") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"the size must be positive, got {text!r}")
    return h, w


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The .npz to write (never one of the images).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Read the input name, layout, channels and size from this model's first input (or --input).")
@click.option("--input", "input_name", help="The model input (and array) name. Default: the model's first input; "
                                            "'input' without --model.")
@click.option("--size", help="HxW to resize to. Default: the model input's static size.")
@click.option("--preset", type=click.Choice(["yolo", "ppocr-rec", "ppocr-cls", "imagenet"]),
              help="yolo: letterbox, rgb, x/255. ppocr-rec, ppocr-cls: keep the ratio, pad right, bgr, (x/255-0.5)/0.5. "
                   "imagenet: stretch, rgb, ImageNet mean and std. Options given after it override it.")
@click.option("--resize", type=click.Choice(RESIZE), help="stretch to HxW; letterbox (keep the ratio, pad with gray 114); "
                                                          "pad-right (keep the ratio at height H, pad the right with 0). "
                                                          "Default: stretch.")
@click.option("--channels", type=click.Choice(CHANNELS), help="Channel order. Default: gray for a 1-channel input, else rgb.")
@click.option("--layout", type=click.Choice(LAYOUTS), help="Default: the model input's (channels on axis 1 or last).")
@click.option("--normalize", type=click.Choice(NORMALIZE),
              help="unit: x/255; symmetric: (x/255-0.5)/0.5; imagenet: (x/255-mean)/std; none: 0-255. Default: unit.")
@click.option("--labels-from-folders", is_flag=True,
              help="Label each image by its folder's name (sorted names are classes 0, 1, ...; written as 'labels', "
                   "the names as 'classes').")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many images (the first in sorted order).")
@output_options
@handle_errors
def data(sources, out_path, model_path, input_name, size, preset, resize, channels, layout, normalize,
         labels_from_folders, limit, json_path, fmt, quiet, verbose):
    """Build a calibration or evaluation .npz from SOURCES (image files, or folders searched
    recursively).

    \b
    Examples:
      onnxprune data photos/ -o calib.npz --model yolov8n.onnx --preset yolo
      onnxprune data lines/ -o lines.npz --model rec.onnx --preset ppocr-rec --size 48x320
      onnxprune data val/ -o val.npz --model resnet.onnx --preset imagenet --labels-from-folders
    """
    import numpy as np

    from ..errors import OnnxPruneError
    from ..graph.outputs import OutputSet
    from ..runtime import images

    out = Output(fmt, quiet, verbose, json_path)
    files = images.image_files(sources)
    if limit is not None:
        files = files[:limit]
    chosen = dict(images.PRESETS.get(preset, {}))
    chosen.update({k: v for k, v in dict(resize=resize, channels=channels, normalize=normalize).items() if v})
    name = input_name or "input"
    with OutputSet({"out_path": out_path, "json_path": out.json_file},
                   {"an image": [str(f) for f in files], "the model": model_path}) as outputs:
        if model_path is not None:
            from ..graph import load_model
            from ..runtime.session import graph_input_specs

            specs = graph_input_specs(load_model(model_path))
            spec = next((s for s in specs if s.name == input_name), None) if input_name else specs[0]
            if spec is None:
                raise OnnxPruneError(f"the model has no input '{input_name}' (it has: "
                                            f"{', '.join(s.name for s in specs)})")
            name = spec.name
            recipe = images.recipe_for(spec, size=_size(size), layout=layout, **chosen)
        else:
            if size is None:
                raise OnnxPruneError("give --size HxW, or --model to read it from the model's input")
            h, w = _size(size)
            recipe = images.Recipe(h, w, layout=layout or "nchw", **chosen).check()
        with out.status(f"reading {len(files)} images"):
            x, labels, classes = images.load_images(files, recipe, labels_from_folders)
        arrays = {name: x}
        if labels is not None:
            arrays.update(labels=labels, classes=np.array(classes))
        outputs.stage_file("out_path", lambda temp: _savez(temp, arrays))
        report = {"out": str(out_path), "input": name, "shape": list(x.shape), "images": len(files),
                  "recipe": recipe.to_dict(), "classes": classes or None}
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(report).encode())
        outputs.commit()
    labelled = f", {len(classes)} classes from folder names" if labels is not None else ""
    out.line(f"wrote {out_path}: '{name}' {list(x.shape)} float32 from {len(files)} images ({recipe.describe()}"
             f"{labelled})")
    out.emit_json(report)


def _savez(path, arrays: dict) -> None:
    import numpy as np

    with open(path, "wb") as f:  # a file object: numpy would add .npz to a bare temporary name
        np.savez(f, **arrays)
