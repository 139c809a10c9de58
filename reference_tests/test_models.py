"""Models: output sizes for odd inputs, float64 gradient checks of tiny versions end to end,
the bilinear initialisation of FCN's upsampling, and overfitting one batch."""

import numpy as np
import pytest

from npseg import functional as F
from npseg import optim
from npseg import random as npseg_random
from npseg.autograd import Tensor
from npseg.gradcheck import gradcheck
from npseg.models import FCN, MODELS, ResNet, SegNet, UNet, VGG16, build_model

TINY = 1 / 32  # VGG widths 2, 4, 8, 16, 16


def _image(n, size, dtype=np.float32, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((n, 3) + size).astype(dtype))


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("paper", [False, True])
@pytest.mark.parametrize("size", [(37, 37), (45, 31), (64, 64)])
def test_fcn_returns_the_input_size(variant, paper, size):
    model = FCN(3, variant=variant, width=TINY, paper=paper)
    assert model(_image(1, size)).shape == (1, 3) + size


def test_fcn_on_resnet_returns_the_input_size():
    model = FCN(5, variant="8s", backbone="resnet", resnet_depth=18, width=TINY, resnet_blocks=(1, 1, 1, 1))
    assert model(_image(2, (39, 50))).shape == (2, 5, 39, 50)


@pytest.mark.parametrize("size", [(29, 29), (33, 40), (16, 16)])
def test_same_unet_and_segnet_return_the_input_size(size):
    assert UNet(2, width=TINY)(_image(1, size)).shape == (1, 2) + size
    assert SegNet(2, width=TINY, depth=3)(_image(1, size)).shape == (1, 2) + size


def test_valid_unet_has_the_papers_sizes():
    model = UNet(2, padding="valid", width=1 / 64)
    assert model.output_size(572) == 388 and model.input_size_for(388) == 572
    assert model(_image(1, (572, 572))).shape == (1, 2, 388, 388)
    for out in (1, 20, 100, 388):
        size = model.input_size_for(out)
        assert model.output_size(size) >= out
        assert model.input_size_for(model.output_size(size)) == size
    with pytest.raises(ValueError, match="not valid"):
        model.output_size(570)


def test_backbones_return_c2_to_c5_at_their_strides():
    x = _image(1, (64, 64))
    for backbone in (VGG16(width=TINY), ResNet(50, width=TINY, blocks=(1, 1, 1, 1))):
        features = backbone(x)
        for level in (2, 3, 4, 5):
            assert features[f"C{level}"].shape[2:] == (64 >> level, 64 >> level)


def test_bottleneck_conv_and_identity_blocks():
    stage = ResNet(50, width=TINY).layers[1]
    blocks = list(stage.children())
    assert type(blocks[0].shortcut).__name__ == "Sequential"  # conv block: projection shortcut
    assert all(type(b.shortcut).__name__ == "Identity" for b in blocks[1:])  # identity blocks
    assert len(blocks) == 4  # ResNet-50: 3, 4, 6, 3


def test_fcn_upsampler_is_bilinear_interpolation_at_init():
    model = FCN(2, variant="8s", width=TINY)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    up = model.upscore2(Tensor(x)).data
    expected = F.interpolate(Tensor(x), size=(10, 12), mode="bilinear", align_corners=False).data
    # away from the border (where the transposed conv sees zero padding) they agree
    np.testing.assert_allclose(up[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_unknown_model_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'fcn4s'"):
        build_model("fcn4s", 3)
    with pytest.raises(ValueError, match="variant"):
        FCN(3, variant="4s")
    with pytest.raises(ValueError, match="paper=True"):
        FCN(3, backbone="resnet", paper=True)
    with pytest.raises(ValueError, match="padding"):
        UNet(3, padding="full")
    with pytest.raises(ValueError, match="fixes variant"):
        build_model("fcn8s", 3, variant="16s")


TINY_MODELS = {
    "fcn8s": lambda: FCN(3, "8s", width=TINY, head_channels=4, dropout=0.0),
    "fcn32s-paper": lambda: FCN(3, "32s", width=TINY, head_channels=4, dropout=0.0, paper=True),
    "fcn16s-resnet": lambda: FCN(3, "16s", backbone="resnet", resnet_depth=50, width=TINY,
                                 resnet_blocks=(1, 1, 1, 1), head_channels=4, dropout=0.0),
    "unet": lambda: UNet(3, width=TINY, depth=2, batch_norm=True),
    "unet-valid": lambda: UNet(3, padding="valid", width=TINY, depth=2),
    "segnet": lambda: SegNet(3, width=TINY, depth=2),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_models_pass_a_float64_gradient_check(name):
    npseg_random.manual_seed(0)
    model = TINY_MODELS[name]().double()
    size = model.input_size_for(8) if name == "unet-valid" else 19
    batch = 1 if name == "fcn32s-paper" else 2  # the paper's 100-pixel padding makes big maps
    x = Tensor(np.random.default_rng(1).standard_normal((batch, 3, size, size)), requires_grad=True)
    params = list(model.parameters())
    out_shape = model(x).shape
    target = np.random.default_rng(2).integers(0, 3, (out_shape[0],) + out_shape[2:])

    def loss(x, *params):
        return F.cross_entropy(model(x), target)

    gradcheck(loss, [x] + params, mode="random", n_directions=3, atol=1e-6, rtol=1e-4)


def test_models_overfit_one_batch():
    npseg_random.manual_seed(0)
    from npseg.data.shapes import ShapesDataset

    data = ShapesDataset("train", size=2, image_size=24, seed=3)
    images = Tensor(np.stack([data[i]["image"] for i in range(2)]))
    labels = np.stack([data[i]["label"] for i in range(2)])
    model = UNet(4, width=1 / 8, depth=2, batch_norm=True)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(120):
        loss = F.cross_entropy(model(images), labels)
        first = float(loss.data) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.data) < 0.05 * first and float(loss.data) < 0.05
    assert set(MODELS) == {"fcn32s", "fcn16s", "fcn8s", "unet", "unet-valid", "segnet"} | (
        {"maskrcnn"} if "maskrcnn" in MODELS else set())
