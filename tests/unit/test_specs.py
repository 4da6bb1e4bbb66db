"""Model manifests and target profiles: every shipped file loads, and every malformed one is refused with an
InputError naming the file (the user edits these TOMLs by hand, so the error must say which one is wrong)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import specs
from harness.errors import InputError, UnknownIdError

GENDER_TOML = specs.MODELS_DIR / "gender-dlib.toml"


def write_model(tmp_path: Path, text: str, stem: str = "gender-dlib") -> Path:
    path = tmp_path / f"{stem}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(specs.MODELS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_model_manifest_loads(path):
    m = specs.load_model(path)
    assert m.id == path.stem
    assert m.task in specs.TASKS
    assert set(m.variants) == set(specs.VARIANTS), "each model declares all six variants"
    assert m.reference_variant in m.variants
    for s in m.sources:
        assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0


@pytest.mark.parametrize("path", sorted(specs.TARGETS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_target_profile_loads(path):
    t = specs.load_target(path)
    assert t.id == path.stem
    assert t.backends, "a target without backends can run nothing"
    for v in t.variants:
        assert t.backend_for(v) is not None


def test_shipped_ids_are_the_documented_ones():
    assert specs.model_ids() == ["blazeface", "gender-dlib", "mobilefacenet"]
    assert {"cpu", "cuda", "jetson", "rpi", "coral"} <= set(specs.target_ids())
    assert [t for t in specs.target_ids() if specs.get_target(t).reference] == ["cpu"]


@pytest.mark.parametrize("model_id", ["blazeface", "gender-dlib", "mobilefacenet"])
def test_build_order_puts_parents_first(model_id):
    m = specs.get_model(model_id)
    order = m.build_order()
    assert sorted(order) == sorted(m.variants)
    for v in order:
        parent = m.variants[v].parent
        if parent is not None:
            assert order.index(parent) < order.index(v), f"{v} built before its parent {parent}"


def test_mobilefacenet_converted_reference_comes_after_its_tflite_source():
    # MobileFaceNet's onnx-fp32 is converted from tflite-fp32: the order must not be the naive VARIANTS order.
    order = specs.get_model("mobilefacenet").build_order()
    assert order.index("tflite-fp32") < order.index("onnx-fp32") < order.index("onnx-int8")


def test_invalid_toml_names_the_file(tmp_path):
    path = write_model(tmp_path, 'id = "gender-dlib"\ntask = [unclosed\n')
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    assert str(path) in str(exc.value) and "invalid TOML" in str(exc.value)


def test_missing_key_names_the_file_and_key(tmp_path):
    text = GENDER_TOML.read_text().replace('licence = "CC0 weights (Cydral / dlib-models); MIT package"\n', "")
    assert text != GENDER_TOML.read_text()
    path = write_model(tmp_path, text)
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    assert str(path) in str(exc.value) and "'licence'" in str(exc.value)


def test_id_must_equal_file_stem(tmp_path):
    path = write_model(tmp_path, GENDER_TOML.read_text(), stem="gender-copy")
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    assert str(path) in str(exc.value) and "gender-copy" in str(exc.value)


def test_target_id_must_equal_file_stem(tmp_path):
    path = tmp_path / "laptop.toml"
    path.write_text((specs.TARGETS_DIR / "cpu.toml").read_text())
    with pytest.raises(InputError) as exc:
        specs.load_target(path)
    assert str(path) in str(exc.value)


def test_unknown_variant_names_the_file(tmp_path):
    text = GENDER_TOML.read_text() + '\n[variants.onnx-fp8]\nfrom = "onnx-fp32"\nmethod = "fp16"\n'
    path = write_model(tmp_path, text)
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    assert str(path) in str(exc.value) and "onnx-fp8" in str(exc.value)


def test_unknown_variant_in_target_names_the_file(tmp_path):
    path = tmp_path / "cpu.toml"
    path.write_text((specs.TARGETS_DIR / "cpu.toml").read_text().replace('"onnx-int8"]', '"onnx-int4"]'))
    with pytest.raises(InputError) as exc:
        specs.load_target(path)
    assert str(path) in str(exc.value) and "onnx-int4" in str(exc.value)


def test_recipe_cycle_names_the_file(tmp_path):
    # onnx-fp16 <- onnx-int8 <- onnx-fp16: every parent exists, so only the ordering can find the cycle.
    text = GENDER_TOML.read_text()
    text = text.replace('[variants.onnx-fp16]\nfrom = "onnx-fp32"', '[variants.onnx-fp16]\nfrom = "onnx-int8"')
    text = text.replace('[variants.onnx-int8]\nfrom = "onnx-fp32"', '[variants.onnx-int8]\nfrom = "onnx-fp16"')
    assert text.count('from = "onnx-fp32"') == 1  # only tflite-fp32 still derives from onnx-fp32
    path = write_model(tmp_path, text)
    with pytest.raises(InputError) as exc:
        specs.load_model(path).build_order()
    assert str(path) in str(exc.value) and "cycle" in str(exc.value)
    assert "onnx-fp16" in str(exc.value) and "onnx-int8" in str(exc.value)


def test_parent_must_exist(tmp_path):
    text = GENDER_TOML.read_text().replace('[variants.onnx-fp16]\nfrom = "onnx-fp32"',
                                           '[variants.onnx-fp16]\nfrom = "tflite-fp8"')
    path = write_model(tmp_path, text)
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    assert str(path) in str(exc.value) and "tflite-fp8" in str(exc.value)


def test_get_target_unknown_lists_valid_ids():
    with pytest.raises(UnknownIdError) as exc:
        specs.get_target("nope")
    msg = str(exc.value)
    assert "'nope'" in msg
    for tid in specs.target_ids():
        assert tid in msg
    assert exc.value.valid == specs.target_ids()


def test_get_model_unknown_lists_valid_ids():
    with pytest.raises(UnknownIdError) as exc:
        specs.get_model("resnet")
    assert all(m in str(exc.value) for m in ("blazeface", "gender-dlib", "mobilefacenet"))


# ---- [input] and [align]: every field is read; a bad value names the manifest ----

def test_align_recipes_are_read_from_the_manifests():
    gender, arc, det = (specs.get_model(m) for m in ("gender-dlib", "mobilefacenet", "blazeface"))
    g = gender.align
    assert (g.points, g.template, g.padding, g.size, g.interpolation, g.antialias) == (
        ("left_eye", "right_eye", "nose_tip", "mouth_centre"), "dlib-5pt", 0.2, 32, "bilinear", "pyramid")
    assert arc.align.template == "arcface-112" and arc.align.size == 112 and arc.align.padding == 0
    assert arc.align.points == ("left_eye", "right_eye", "nose_tip", "mouth_centre")
    assert det.align is None and det.input.resize == "letterbox"
    assert gender.input.size == (32, 32) and gender.input.colour == "RGB"


def _refused(tmp_path, text, *needles):
    path = write_model(tmp_path, text)
    with pytest.raises(InputError) as exc:
        specs.load_model(path)
    msg = str(exc.value)
    assert str(path) in msg and all(n in msg for n in needles), msg


@pytest.mark.parametrize("old, new, needles", [
    ('antialias = "pyramid"', 'antialias = "lanczos"', ("[align]", "antialias 'lanczos'")),
    ('template = "dlib-5pt"', 'template = "mtcnn"', ("[align]", "template 'mtcnn'")),
    ('points = ["left_eye", "right_eye", "nose_tip", "mouth_centre"]', 'points = ["left_eye", "right_eye_outer"]',
     ("align.points", "right_eye_outer", "not detector points")),
    ('padding = 0.2', 'padding = -1', ("[align]", "padding")),
    ('interpolation = "bilinear"\n', '', ("'align.interpolation'",)),
    ('padding = 0.2', 'padding = 0.2\nsize = 32', ("unknown key(s) in [align]: size",)),
    ('size = [32, 32]', 'size = [32, 40]', ("square",)),
    ('size = [32, 32]', 'size = [32]', ("input.size",)),
    ('colour = "RGB"', 'colour = "BGR"', ("input.colour 'BGR'",)),
    ('colour = "RGB"', 'colour = "RGB"\nlayout = "NCHW"', ("unknown key(s) in [input]: layout",)),
    ('resize = "align-dlib-chip"', 'resize = "letterbox"', ("[align] given but input.resize is 'letterbox'",)),
    ('resize = "align-dlib-chip"', 'resize = "Dlib Chip"', ("input.resize",)),
])
def test_bad_input_or_align_values_name_the_file(tmp_path, old, new, needles):
    text = GENDER_TOML.read_text()
    assert old in text
    _refused(tmp_path, text.replace(old, new, 1), *needles)


def test_a_chip_without_its_align_table_is_refused(tmp_path):
    text = GENDER_TOML.read_text()
    start = text.index("\n[align]\n") + 1
    text = text[:start] + text[text.index("[variants.onnx-fp32]"):]
    _refused(tmp_path, text, "'align-dlib-chip'", "[align] table", "missing")


def test_two_manifests_naming_one_chip_must_make_it_alike(tmp_path):
    from harness.pipeline import chip_recipes

    gender = specs.get_model("gender-dlib")
    other = specs.load_model(write_model(tmp_path, GENDER_TOML.read_text().replace('"pyramid"', '"area"')))
    assert chip_recipes([gender, gender])["align-dlib-chip"] == gender.align
    with pytest.raises(InputError, match="align-dlib-chip.*different \\[align\\] recipe"):
        chip_recipes([gender, other])
    assert set(chip_recipes()) == {"align-dlib-chip", "align-arcface"}


def test_shipped_onnx_int8_recipes_are_portable_across_x86():
    """Every onnx-int8 recipe is U8S8 with 7-bit weights: onnxruntime's documented remedy for U8S8 saturation on
    x86 CPUs without VNNI (models/*.toml and docs/metrics.md say why)."""
    for m in specs.all_models():
        opts = m.variants["onnx-int8"].options
        assert (opts["activation"], opts["weight"], opts["reduce_range"]) == ("uint8", "int8", True), m.id


@pytest.mark.parametrize("old, new, needles", [
    ("reduce_range = true", 'reduce_range = "yes"', ("variant onnx-int8", "reduce_range must be true or false")),
    ('weight = "int8"', 'weight = "int4"', ("weight must be 'int8' or 'uint8'", "'int4'")),
    ('activation = "uint8"', 'activation = "fp8"', ("activation must be",)),
    ("reduce_range = true", "reduce_range = true\nreduce = true", ("unknown option(s) reduce", "valid: activation")),
    ('[variants.onnx-fp16]\nfrom = "onnx-fp32"\nmethod = "fp16"',
     '[variants.onnx-fp16]\nfrom = "onnx-fp32"\nmethod = "fp16"\nreduce_range = true',
     ("variant onnx-fp16 (method fp16)", "valid: none")),
    ('[variants.onnx-fp32]\nsource = "onnx"', '[variants.onnx-fp32]\nsource = "onnx"\nweight = "uint8"',
     ("taken from a source file",)),
    # a method that does not make this format pair (harness/buildmethods.py): int8 keeps the parent's format
    ('[variants.tflite-fp32]\nfrom = "onnx-fp32"\nmethod = "onnx-to-tflite"',
     '[variants.tflite-fp32]\nfrom = "onnx-fp32"\nmethod = "int8"',
     ("variant tflite-fp32", "method 'int8' makes onnx -> onnx, tflite -> tflite, not onnx -> tflite")),
])
def test_bad_recipe_options_name_the_file(tmp_path, old, new, needles):
    text = GENDER_TOML.read_text()
    assert old in text
    _refused(tmp_path, text.replace(old, new, 1), *needles)


def test_build_methods_are_a_registry_of_importable_converters():
    """Every registered converter names a real function (imported here, as a build would), every option has a known
    kind, and every shipped manifest's built variants resolve through it; reading manifests imports no converter."""
    import inspect
    import subprocess
    import sys

    from harness import buildmethods

    for m in buildmethods.METHODS.values():
        for conv in m.converters:
            fn = conv.load()
            params = list(inspect.signature(fn).parameters)
            assert params[:2] == ["src", "dst"], conv.function
            assert (params[2:3] == ["calib"]) == m.calibrated, conv.function
            assert set(conv.options.values()) <= set(buildmethods.OPTION_KINDS), conv.function
    for model in specs.all_models():
        for recipe in model.variants.values():
            if recipe.parent is not None:
                buildmethods.lookup(recipe.method, model.variants[recipe.parent].format, recipe.format, model.id)
    code = ("import sys; from harness import specs; specs.all_models(); "
            "print([m for m in sys.modules if m.startswith(('harness.convert', 'onnxruntime.quantization', "
            "'ai_edge_quantizer', 'tflite2onnx'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
