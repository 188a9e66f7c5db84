"""Feature extractors from local files: TorchScript (upstream's calling convention), torch.export (with the
checks that refuse unsafe archives), torchvision weights, the plugin hook, and the errors."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from stylegan2_ada import hookspecs
from stylegan2_ada.metrics import extractors as ex
from stylegan2_ada.plugins import HOOK_NAMES, PluginManager

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class UpstreamStyle(nn.Module):
    """Like NVIDIA's detectors: uint8-range [N, 3, H, W] in, ``return_features`` selects the features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert img.dtype == torch.uint8
        x = self.conv(img.to(torch.float32) / 255).mean(dim=(2, 3))
        return x if return_features else x.sum(dim=1, keepdim=True)


class OneChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).amax(dim=(2, 3))


def _script(module: nn.Module, path: Path, extra: dict[str, str] | None = None) -> Path:
    with warnings.catch_warnings():  # torch.jit.script is deprecated upstream; it is what users have
        warnings.simplefilter("ignore")
        torch.jit.script(module.eval()).save(str(path), _extra_files=extra or {})
    return path


def _export(
    module: nn.Module, path: Path, *, dynamic: bool = True, extra: dict[str, str] | None = None
) -> Path:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(module.eval(), (torch.zeros(2, 1, 16, 16),), dynamic_shapes=shapes)
    torch.export.save(program, str(path), extra_files=extra)
    return path


def _images(n: int = 3, channels: int = 1, res: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, res, res), dtype=torch.uint8)


def _quiet(message: str) -> None:
    pass


def test_torchscript_with_return_features_is_called_as_upstream_does(tmp_path: Path) -> None:
    net = UpstreamStyle().eval()
    messages: list[str] = []
    extractor = ex.load_extractor(_script(net, tmp_path / "det.pt"), log=messages.append)
    assert isinstance(extractor, ex.FeatureExtractor)
    assert extractor.feature_dim == 6 and extractor.describe()["call"] == "net(x, return_features=True)"
    assert any("TorchScript" in m and "code" in m for m in messages)  # said plainly in the log
    gray = _images(4, 1, 20)
    with torch.no_grad():
        expected = net(gray.repeat(1, 3, 1, 1), return_features=True)  # grayscale replicated, own size
    torch.testing.assert_close(extractor(gray), expected)


def test_torchscript_input_description_embedded_or_side_car(tmp_path: Path) -> None:
    doc = {"name": "gray", "input_size": 8, "input_channels": 1, "input_range": "-1-1"}
    net = OneChannel().eval()
    embedded = ex.load_extractor(
        _script(net, tmp_path / "a.pt", {ex.EXTRA_FILE: json.dumps(doc)}), log=_quiet
    )
    side = _script(net, tmp_path / "b.pt")
    Path(f"{side}.json").write_text(json.dumps(doc))
    sidecar = ex.load_extractor(side, log=_quiet)
    rgb = _images(2, 3, 16)
    x = torch.nn.functional.interpolate(
        rgb.float().mean(1, keepdim=True), size=(8, 8), mode="bilinear", antialias=True
    )
    with torch.no_grad():
        expected = net(x / 127.5 - 1)
    for extractor in (embedded, sidecar):
        assert extractor.name == "gray"
        torch.testing.assert_close(extractor(rgb), expected, rtol=1e-5, atol=1e-5)
    Path(f"{side}.json").write_text(json.dumps({**doc, "input_sise": 8}))
    with pytest.raises(ex.DetectorError, match="unknown metadata keys input_sise"):
        ex.load_extractor(side, log=_quiet)


def test_content_hash_follows_the_file_and_the_preprocessing(tmp_path: Path) -> None:
    path = _script(
        OneChannel(),
        tmp_path / "n.pt",
        {ex.EXTRA_FILE: json.dumps({"input_channels": 1, "input_range": "0-1"})},
    )
    first = ex.load_extractor(path, log=_quiet).content_hash
    assert ex.load_extractor(path, log=_quiet).content_hash == first
    _script(OneChannel(), path, {ex.EXTRA_FILE: json.dumps({"input_channels": 1, "input_range": "-1-1"})})
    assert ex.load_extractor(path, log=_quiet).content_hash != first


def test_torch_export_dynamic_and_static_batch(tmp_path: Path) -> None:
    net = OneChannel().eval()
    dynamic = ex.load_extractor(
        _export(
            net,
            tmp_path / "d.pt2",
            extra={ex.EXTRA_FILE: json.dumps({"input_channels": 1, "input_range": "0-1"})},
        ),
        log=_quiet,
    )
    static = ex.load_extractor(_export(net, tmp_path / "s.pt2", dynamic=False), log=_quiet)
    assert static.static_batch == 2 and static.spec.input_size == 16 and static.spec.input_range == "0-255"
    images = _images(5, 1, 16)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(images), net(images.float() / 255))
        torch.testing.assert_close(static(images), net(images.float()))  # 5 images through batches of 2


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a zip archive, passing each member's name and bytes through ``edit`` (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _edit_json(suffix: str, change):
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith(suffix):
            doc = json.loads(data)
            change(doc)
            return json.dumps(doc).encode()
        return data

    return edit


def _retarget(doc: dict) -> None:
    doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"


def _pickled_weight(doc: dict) -> None:
    next(iter(doc["config"].values()))["use_pickle"] = True


def _evil_expression(doc: dict) -> None:
    doc["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]["expr_str"] = "__import__('os')"


def _guard_code(doc: dict) -> None:
    doc["guards_code"] = ["import os"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit_json("models/model.json", _retarget), "calls 'torch.os.system'"),
        (_edit_json("model_weights_config.json", _pickled_weight), "pickled object"),
        (_edit_json("models/model.json", _evil_expression), "shape expression"),
        (_edit_json("models/model.json", _guard_code), "guard code"),
    ],
)
def test_unsafe_torch_export_archives_are_refused_before_loading(tmp_path: Path, edit, message: str) -> None:
    good = _export(OneChannel(), tmp_path / "good.pt2")
    bad = _rewrite(good, tmp_path / "bad.pt2", edit)
    with pytest.raises(ex.DetectorError, match=message):
        ex.load_extractor(bad, log=_quiet)


def test_torch_export_with_compiled_code_is_refused(tmp_path: Path) -> None:
    good = _export(OneChannel(), tmp_path / "good.pt2")
    bad = tmp_path / "aoti.pt2"
    _rewrite(good, bad, lambda name, data: data)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("good/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ex.DetectorError, match="AOTInductor native code"):
        ex.load_extractor(bad, log=_quiet)


def test_torchvision_weights_give_penultimate_features(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    path = tmp_path / "r18.pt"
    torch.save(net.state_dict(), path)
    extractor = ex.load_extractor(path)
    assert (extractor.name, extractor.feature_dim) == ("resnet18", 512)
    images = _images(2, 1, 32)
    x = torch.nn.functional.interpolate(
        images.float().repeat(1, 3, 1, 1), size=(224, 224), mode="bilinear", antialias=True
    )
    mean = torch.tensor(ex.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(ex.IMAGENET_STD).view(1, 3, 1, 1)
    net.fc = nn.Identity()
    with torch.no_grad():
        expected = net((x / 255 - mean) / std)
    torch.testing.assert_close(extractor(images), expected, rtol=1e-4, atol=1e-4)


def test_torchvision_weights_wrapped_prefixed_or_safetensors(tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    state = torchvision.models.resnet18(weights=None).state_dict()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    st_file = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, st_file)
    for path in (wrapped, st_file):
        assert ex.load_extractor(path).name == "resnet18"
    assert ex.load_extractor(st_file, arch="resnet18").feature_dim == 512
    with pytest.raises(ex.DetectorError, match="do not fit resnet34"):
        ex.load_extractor(st_file, arch="resnet34")


def test_pickled_models_and_unknown_files_are_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(nn.Linear(2, 2), whole)
    with pytest.raises(ex.DetectorError, match="refused: it holds pickled Python objects"):
        ex.load_extractor(whole)
    odd = tmp_path / "odd.pt"
    torch.save({"weight": torch.zeros(2, 2)}, odd)
    with pytest.raises(ex.DetectorError, match="match none of the known torchvision backbones"):
        ex.load_extractor(odd)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ex.DetectorError, match="not a recognised detector file"):
        ex.load_extractor(text)
    with pytest.raises(ex.DetectorError, match="not found"):
        ex.load_extractor(tmp_path / "missing.pt")


class _PluginExtractor:
    name = "toy"
    feature_dim = 2
    content_hash = "toy-1"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3))[:, :1].repeat(1, 2)

    def describe(self) -> dict:
        return {"name": self.name, "kind": "toy"}


class _ToyPlugin:
    @hookspecs.hookimpl
    def feature_extractors(self, path: str, device: torch.device):
        return _PluginExtractor() if path.endswith(".toy") else None


def test_plugins_recognise_their_files_first(tmp_path: Path) -> None:
    assert "feature_extractors" in HOOK_NAMES
    pm = PluginManager()
    pm.register(_ToyPlugin(), name="toy")
    toy = tmp_path / "model.toy"
    toy.write_bytes(b"anything")
    assert isinstance(ex.load_extractor(toy, pm=pm), _PluginExtractor)
    # Files the plugin does not claim go to the core's kinds.
    assert (
        ex.load_extractor(_script(UpstreamStyle(), tmp_path / "n.pt"), pm=pm, log=_quiet).kind
        == "torchscript"
    )


def test_a_network_that_fails_on_the_probe_gets_a_clear_message(tmp_path: Path) -> None:
    path = _script(OneChannel(), tmp_path / "float_net.pt")  # takes float input, default convention is uint8
    with pytest.raises(ex.DetectorError, match=r"failed on a batch.*probe batch.*float_net\.pt\.json"):
        ex.load_extractor(path, log=_quiet)
