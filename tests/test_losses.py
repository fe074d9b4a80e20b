"""PiadeLoss: per-image terms, their weighting, input checks and the frozen VGG11."""

from __future__ import annotations

import pytest
import torch

from piade_lib.model.losses import PiadeLoss
from piade_lib.presets import get_preset

SIZE = 32


@pytest.fixture(scope="module")
def loss_fn() -> PiadeLoss:
    torch.manual_seed(0)
    return PiadeLoss("paper")


@pytest.fixture(scope="module")
def other_loss_fn() -> PiadeLoss:
    """Same VGG weights as ``loss_fn``; other lambdas and no ImageNet normalisation of the VGG input."""
    torch.manual_seed(0)
    return PiadeLoss(get_preset("paper", lambda_perceptual=2.0, lambda_ssim=0.5, vgg_input_normalize=False))


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] with some structure (upsampled noise), so SSIM and VGG features are not trivial."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def test_identical_images_give_zero(loss_fn):
    x = smooth_images(3)
    terms = loss_fn.per_image(x, x.clone())
    for name in ("mse", "perceptual", "ssim_loss", "total"):
        assert terms[name].shape == (3,)
        assert terms[name].abs().max() < 1e-5, name


def test_terms_grow_with_corruption(loss_fn):
    x = smooth_images(2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    values = [loss_fn.per_image((x + s * noise).clamp(0, 1), x) for s in levels]
    for name in ("mse", "perceptual", "ssim_loss", "total"):
        series = torch.stack([v[name] for v in values])  # (levels, B)
        assert (series[1:] > series[:-1]).all(), f"{name} is not increasing with the noise level: {series}"


def test_total_is_weighted_sum_and_batch_loss_is_mean(other_loss_fn):
    x, y = smooth_images(4, seed=2), smooth_images(4, seed=3)
    t = other_loss_fn.per_image(y, x)
    assert torch.allclose(t["total"], t["mse"] + 2.0 * t["perceptual"] + 0.5 * t["ssim_loss"])
    assert torch.allclose(other_loss_fn(y, x), t["total"].mean())


def test_terms_are_per_image(loss_fn):
    x, y = smooth_images(3, seed=4), smooth_images(3, seed=5)
    full = loss_fn.per_image(y, x)
    y_changed = y.clone()
    y_changed[1:] = x[1:]  # only the other images change
    single = loss_fn.per_image(y_changed, x)
    for name in full:
        assert torch.allclose(single[name][0], full[name][0], atol=1e-6), name
        assert (single[name][1:].abs() < 1e-5).all()


def test_rejects_targets_outside_unit_range_and_bad_shapes(loss_fn):
    x = smooth_images(2)
    with pytest.raises(ValueError, match=r"expect target images in \[0, 1\]"):
        loss_fn(x, x * 2.0)
    with pytest.raises(ValueError, match=r"expect target images in \[0, 1\]"):
        loss_fn(x, x - 0.5)
    with pytest.raises(ValueError, match="differs from target shape"):
        loss_fn(x[:, :, :16, :16], x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loss_fn(x[0], x[0])
    loss_fn(x, (x * (1 + 5e-5)))  # within the tolerance
    loss_fn(x * 2 - 1, x)  # a reconstruction in [-1, 1] (raw Tanh) is accepted


def test_vgg_is_frozen_and_stays_in_eval_mode(loss_fn):
    assert all(not p.requires_grad for p in loss_fn.vgg.parameters())
    loss_fn.train()
    assert loss_fn.training and not loss_fn.vgg.training
    x = smooth_images(2)
    y = smooth_images(2, seed=6).requires_grad_(True)
    loss_fn(y, x).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.vgg.parameters())
    loss_fn.eval()
    assert not loss_fn.training and not loss_fn.vgg.training


def test_vgg_input_normalisation_changes_only_perceptual(loss_fn, other_loss_fn):
    for a, b in zip(loss_fn.vgg.parameters(), other_loss_fn.vgg.parameters()):
        assert torch.equal(a, b)  # same (seeded) VGG weights
    x, y = smooth_images(2, seed=7), smooth_images(2, seed=8)
    t_norm, t_raw = loss_fn.per_image(y, x), other_loss_fn.per_image(y, x)
    assert torch.allclose(t_norm["mse"], t_raw["mse"]) and torch.allclose(t_norm["ssim_loss"], t_raw["ssim_loss"])
    assert not torch.allclose(t_norm["perceptual"], t_raw["perceptual"], rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# ssim_per_image: pytorch_msssim's SSIM, reformulated (banded matrix products instead of convolutions)
# ---------------------------------------------------------------------------------------------
def _msssim(x, y):
    from pytorch_msssim import ssim

    return ssim(x, y, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)


@pytest.mark.parametrize("size", [32, 120])
def test_ssim_reformulation_equals_pytorch_msssim(size):
    """Exact in real arithmetic: equal in float64 (values and gradients) to 1e-12; in float32 its error
    against float64 is that of pytorch_msssim itself."""
    from piade_lib.model.losses import ssim_per_image

    g = torch.Generator().manual_seed(size)
    target = torch.nn.functional.interpolate(
        torch.rand(3, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear", align_corners=False
    )
    recon = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    values, grads = {}, {}
    for name, fn in (("ours", ssim_per_image), ("msssim", _msssim)):
        for dtype in (torch.float64, torch.float32):
            r = recon.detach().to(dtype).clone().requires_grad_(True)
            v = fn(r, target.to(dtype))
            (1 - v).sum().backward()
            values[name, dtype], grads[name, dtype] = v.detach().double(), r.grad.double()
    torch.testing.assert_close(values["ours", torch.float64], values["msssim", torch.float64], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads["ours", torch.float64], grads["msssim", torch.float64], rtol=1e-10, atol=1e-12)
    ref_v, ref_g = values["msssim", torch.float64], grads["msssim", torch.float64]
    for name in ("ours", "msssim"):
        assert ((values[name, torch.float32] - ref_v).abs().max()) < 1e-6, name
        assert ((grads[name, torch.float32] - ref_g).norm() / ref_g.norm()) < 1e-5, name


def test_ssim_stays_float32_under_autocast_and_with_target_gradients():
    from piade_lib.model.losses import ssim_per_image

    x, y = smooth_images(2, seed=9), smooth_images(2, seed=10)
    ref = ssim_per_image(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = ssim_per_image(x, y)
    assert v.dtype == torch.float32 and torch.equal(v, ref)
    # both inputs requiring gradients (one stacked product) gives the same values
    xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    torch.testing.assert_close(ssim_per_image(xg, yg).detach(), ref, rtol=0, atol=1e-7)
    # images smaller than the window go to pytorch_msssim (which skips the filter along such an axis)
    small = torch.rand(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="Skipping Gaussian Smoothing"):
        assert torch.equal(ssim_per_image(small, small.flip(-1)), _msssim(small, small.flip(-1)))


def test_loss_in_channels_last_matches_contiguous(loss_fn):
    """The memory format of the VGG (piade_lib.engine.precision.prepare_loss) changes only float32 rounding."""
    import copy

    from piade_lib.engine.precision import set_memory_format

    cl = set_memory_format(copy.deepcopy(loss_fn), torch.channels_last)
    assert cl.vgg[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = smooth_images(2, seed=11), smooth_images(2, seed=12)
    a = loss_fn.per_image(y, x)
    b = cl.per_image(y.contiguous(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_vgg_head_is_torchvision_features_4_bit_for_bit_forward_and_backward(memory_format):
    """The head runs max-pool before ReLU (cheaper): the same features and input gradients, bit for bit, as
    torchvision's features[:4] (conv, ReLU, max-pool, conv), with its state-dict keys."""
    import torchvision

    from piade_lib.model.losses import _mean_square_per_image, vgg11_head

    torch.manual_seed(0)
    head = vgg11_head(pretrained=False)
    reference = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"])[:4]
    assert set(head.state_dict()) == set(reference.state_dict()) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    reference.load_state_dict(head.state_dict())
    reference.requires_grad_(False)
    head.to(memory_format=memory_format)
    reference.to(memory_format=memory_format)
    # inputs with ties and with whole pooling windows below zero (ReLU and argmax corner cases)
    x = torch.rand(3, 3, 24, 24).contiguous(memory_format=memory_format)
    x[:, :, :8] = 0.5
    target = torch.rand(3, 3, 24, 24).contiguous(memory_format=memory_format)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    fa, fb = head(xa), reference(xb)
    assert torch.equal(fa, fb)
    assert (fa < 0).any() and (fa > 0).any()
    with torch.no_grad():
        ft = reference(target)
    la = _mean_square_per_image(fa - ft)  # our backward (one pass)
    d = fb - ft
    flat = d.permute(0, 2, 3, 1).reshape(3, -1) if memory_format == torch.channels_last else d.reshape(3, -1)
    lb = (flat * flat).mean(dim=1)  # autograd's backward
    assert torch.equal(la, lb)
    g = torch.rand(3)
    la.backward(g)
    lb.backward(g)
    assert xa.grad.abs().sum() > 0
    assert torch.equal(xa.grad, xb.grad)


def test_mean_square_per_image_without_gradients_is_the_plain_expression():
    from piade_lib.model.losses import _mean_square_per_image

    d = torch.randn(4, 3, 5, 5)
    assert torch.equal(_mean_square_per_image(d), (d.reshape(4, -1) * d.reshape(4, -1)).mean(1))
    with torch.no_grad():
        assert torch.equal(_mean_square_per_image(d.requires_grad_()), d.detach().pow(2).flatten(1).mean(1))
