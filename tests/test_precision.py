"""piade_lib.engine.precision: the numeric settings of a training step (autocast, memory format, Adam)."""

from __future__ import annotations

import copy

import pytest
import torch

from piade_lib.engine import precision as prec
from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model

CPU = torch.device("cpu")


def test_resolve_defaults_and_errors():
    auto = prec.resolve(CPU)
    assert (auto.precision, auto.autocast_dtype, auto.grad_scaler, auto.channels_last) == ("fp32", None, False, True)
    bf16 = prec.resolve("cpu", "bf16")
    assert (bf16.autocast_dtype, bf16.grad_scaler, bf16.channels_last) == (torch.bfloat16, False, True)
    assert not prec.resolve(CPU, "fp32", channels_last=False).channels_last
    assert not prec.resolve(CPU, bf16, channels_last=False).channels_last
    assert prec.resolve(CPU, bf16) is bf16
    assert prec.amp_settings(CPU, "auto") == (None, False)  # what train.amp_settings gives on the CPU
    assert prec.amp_settings(CPU, "bf16") == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="unknown precision"):
        prec.resolve(CPU, "fp8")
    with pytest.raises(ValueError, match="for CUDA devices"):
        prec.resolve(CPU, "fp16")
    assert set(prec.PRECISIONS) == {"auto", "fp32", "bf16", "fp16"}
    assert isinstance(prec.cpu_has_native_bf16(), bool)


def test_autocast_and_grad_scaler():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with prec.autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    with prec.autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert not prec.grad_scaler(CPU, "bf16").is_enabled()


def test_prepare_model_loss_and_batch(single_thread):
    torch.manual_seed(0)
    model = build_model("paper", image_size=32)
    ref = copy.deepcopy(model).eval()
    out = prec.prepare_model(model, CPU, "bf16")
    assert out is model
    assert model.encoder.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.decoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.routing.W.is_contiguous()  # 4-d but not a convolution: layout kept
    loss_fn = prec.prepare_loss(PiadeLoss("paper"), CPU, "bf16")
    assert loss_fn.vgg[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = prec.prepare_batch(torch.rand(2, 3, 32, 32, dtype=torch.float64), CPU, "bf16")
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert prec.prepare_batch(
        torch.rand(2, 3, 32, 32), CPU, prec.resolve(CPU, "fp32", channels_last=False)
    ).is_contiguous()
    with torch.no_grad():  # channels_last alone changes float32 rounding only
        torch.testing.assert_close(
            model.eval()(x).reconstruction, ref(x.contiguous()).reconstruction, rtol=1e-4, atol=1e-5
        )
    compiled = prec.prepare_model(copy.deepcopy(ref), CPU, "fp32", compile=True)  # lazy: nothing compiled yet
    assert hasattr(compiled, "_orig_mod")


def test_optimizer_is_adam_with_l2_and_matches_the_default_loop():
    torch.manual_seed(0)
    params = [torch.randn(50, 20), torch.randn(20)]
    a = [p.clone().requires_grad_(True) for p in params]
    b = [p.clone().requires_grad_(True) for p in params]
    frozen = torch.zeros(3, requires_grad=False)
    opt_a = prec.optimizer(a + [frozen], lr=1e-3, weight_decay=1e-3, device=CPU)
    opt_b = torch.optim.Adam(b, lr=1e-3, weight_decay=1e-3)
    assert isinstance(opt_a, torch.optim.Adam) and len(opt_a.param_groups[0]["params"]) == 2
    assert opt_a.defaults["weight_decay"] == 1e-3 and opt_a.defaults["lr"] == 1e-3
    assert bool(opt_a.defaults.get("fused")) == prec.fused_adam_available(CPU)
    for _ in range(5):
        g = [torch.randn_like(p) for p in params]
        for ps, opt in ((a, opt_a), (b, opt_b)):
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
    for pa, pb in zip(a, b):  # the same update up to float32 rounding
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_bf16_training_step_on_the_cpu(single_thread):
    """One step as train_run would take it: float32 parameters, finite gradients, loss near float32's."""
    torch.manual_seed(0)
    base = build_model("paper", image_size=32)
    x0 = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8), size=(32, 32), mode="bilinear", align_corners=False)
    losses = {}
    for name in ("fp32", "bf16"):
        model = prec.prepare_model(copy.deepcopy(base), CPU, name)
        torch.manual_seed(1)
        loss_fn = prec.prepare_loss(PiadeLoss("paper"), CPU, name)
        opt = prec.optimizer(model.parameters(), 1e-3, 1e-4, CPU)
        x = prec.prepare_batch(x0, CPU, name)
        with prec.autocast(CPU, name):
            recon = model(x).reconstruction
        loss = loss_fn.per_image(recon.float(), x)["total"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses[name] = loss.item()
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 2e-2, losses
