"""The PIADE network: shapes for both presets and sizes, squash, routing, decoded vector, init, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from piade_lib.model.capsules import DynamicRouting, squash
from piade_lib.model.network import PIADE, build_model, model_from_config
from piade_lib.model.pyramid import PyramidPooling
from piade_lib.model.se_resnet import SEBlock

B = 2
# (preset, image size) -> (encoder channels, encoder width, primary capsules, decoder in-channels), from the
# paper (Sec. 3.1, Tables 5-6) and the released code (docs/reproduction-notes.md, section 1)
EXPECTED = {
    ("paper", 120): (512, 8, 680, 1024),
    ("paper", 32): (512, 2, 680, 64),
    ("authors_code", 120): (2048, 4, 480, 640),
    ("authors_code", 32): (2048, 1, 480, 40),
}


@pytest.fixture(scope="module")
def models():
    """Build each (preset, size, n_vectors) model once per module."""
    cache: dict[tuple, PIADE] = {}

    def get(preset: str, size: int, n_vectors: int = 2) -> PIADE:
        key = (preset, size, n_vectors)
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = build_model(preset, size, n_vectors)
        return cache[key]

    return get


@pytest.mark.parametrize("preset,size", list(EXPECTED))
@pytest.mark.parametrize("n_vectors", [1, 2])
def test_output_shapes_and_ranges(models, preset, size, n_vectors):
    model = models(preset, size, n_vectors).eval()
    channels, width, n_caps, dec_in = EXPECTED[(preset, size)]
    seen = {}
    hooks = [
        model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("enc", o.shape)),
        model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("dec_in", i[0].shape)),
    ]
    try:
        with torch.no_grad():
            out = model(torch.rand(B, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    assert seen["enc"] == (B, channels, width, width)
    assert seen["dec_in"] == (B, dec_in, 8, 8)
    assert out.reconstruction.shape == (B, 3, size, size)
    assert out.vectors.shape == (B, n_vectors, 64)
    assert out.lengths.shape == (B, n_vectors)
    assert out.selected.shape == (B,) and out.selected.dtype == torch.long
    assert out.coupling.shape == (B, n_caps, n_vectors)
    norms = out.vectors.norm(dim=-1)
    assert torch.allclose(out.lengths, norms)
    assert (norms >= 0).all() and (norms < 1).all()
    assert torch.allclose(out.coupling.sum(dim=-1), torch.ones(B, n_caps), atol=1e-5)
    lo, hi = (0.0, 1.0) if model.preset.output_activation == "tanh01" else (-1.0, 1.0)
    assert out.reconstruction.min() >= lo and out.reconstruction.max() <= hi
    if n_vectors == 1:
        assert (out.selected == 0).all() and torch.allclose(out.coupling, torch.ones_like(out.coupling))


def test_training_mode_forward_and_backward(models):
    model = models("paper", 32).train()
    x = torch.rand(B, 3, 32, 32)
    out = model(x)
    out.reconstruction.mean().backward()
    assert model.routing.W.grad is not None and model.routing.W.grad.abs().sum() > 0
    assert model.encoder.backbone.conv1.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def squash_reference(s: np.ndarray, a: float) -> np.ndarray:
    """Eq. 3 written out in numpy."""
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    return (norm**2 / (a + norm**2)) * s / norm


@pytest.mark.parametrize("a", [1.0, 0.5, 3.0])
def test_squash_matches_eq3(a):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 3, 64)) * rng.uniform(0.01, 10, size=(5, 3, 1))
    v = squash(torch.from_numpy(s), a).numpy()
    np.testing.assert_allclose(v, squash_reference(s, a), rtol=1e-6, atol=1e-9)
    assert (np.linalg.norm(v, axis=-1) < 1).all()


def test_squash_is_safe_at_zero():
    s = torch.zeros(2, 64, requires_grad=True)
    v = squash(s)
    v.sum().backward()
    assert torch.equal(v, torch.zeros_like(v)) and torch.isfinite(s.grad).all()


def routing_reference(W: np.ndarray, u: np.ndarray, r: int, a: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1 with explicit loops over capsules (numpy), W: (n_out, n_in, D, d), u: (B, n_in, d)."""
    n_out, n_in = W.shape[:2]
    bsz = u.shape[0]
    u_hat = np.zeros((bsz, n_in, n_out, W.shape[2]))
    for i in range(n_in):
        for j in range(n_out):
            u_hat[:, i, j] = u[:, i] @ W[j, i].T
    logits = np.zeros((bsz, n_in, n_out))
    for _ in range(r):
        c = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        s = np.stack([sum(c[:, i, j, None] * u_hat[:, i, j] for i in range(n_in)) for j in range(n_out)], axis=1)
        v = squash_reference(s, a)
        for j in range(n_out):
            logits[:, :, j] += np.einsum("bid,bd->bi", u_hat[:, :, j], v[:, j])
    return v, c


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_routing_matches_algorithm_1(iterations):
    torch.manual_seed(1)
    routing = DynamicRouting(
        n_in=6, in_dim=8, n_out=3, out_dim=16, iterations=iterations, squash_a=0.7, weight_init="randn0.01"
    )
    with torch.no_grad():
        routing.W.mul_(30)  # make the agreements large enough for the iterations to matter
    u = torch.randn(2, 6, 8, dtype=torch.float64)
    v, c = routing.double()(u)
    v_ref, c_ref = routing_reference(routing.W.detach().numpy(), u.numpy(), iterations, a=0.7)
    # the eps that keeps squash finite at 0 moves the result by ~1e-9
    np.testing.assert_allclose(v.detach().numpy(), v_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(c.detach().numpy(), c_ref, rtol=1e-6, atol=1e-8)


def test_routing_iterations_change_result_and_one_iteration_is_uniform():
    torch.manual_seed(2)
    routing = DynamicRouting(n_in=20, n_out=2, weight_init="orthogonal", iterations=3)
    u = torch.randn(4, 20, 8)
    v1, c1 = routing(u, iterations=1)
    v3, c3 = routing(u)
    assert torch.allclose(c1, torch.full_like(c1, 0.5))
    assert not torch.allclose(c3, c1, atol=1e-3)
    assert not torch.allclose(v3, v1, atol=1e-4)
    assert torch.allclose(c3.sum(-1), torch.ones(4, 20))


def test_routing_detach_keeps_forward_and_changes_gradient():
    torch.manual_seed(3)
    plain = DynamicRouting(n_in=10, n_out=2, out_dim=16, weight_init="orthogonal", detach=False)
    detached = copy.deepcopy(plain)
    detached.detach = True
    u = torch.randn(3, 10, 8)
    v_plain, _ = plain(u)
    v_det, _ = detached(u)
    assert torch.allclose(v_plain, v_det, atol=1e-6)
    v_plain.pow(2).sum().backward()
    v_det.pow(2).sum().backward()
    assert not torch.allclose(plain.W.grad, detached.W.grad, atol=1e-6)


def test_build_model_routing_iterations_override(models):
    # training mode (batch statistics): fresh BN running statistics make eval-mode capsules tiny
    base = copy.deepcopy(models("paper", 32)).train()
    one = build_model("paper", 32, routing_iterations=1).train()
    one.load_state_dict(base.state_dict())
    assert one.routing.iterations == 1 and one.config["routing_iterations"] == 1
    assert one.config["preset"]["routing_iterations"] == 1 and base.routing.iterations == 3
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        out_one, out_base = one(x), base(x)
    assert torch.allclose(out_one.coupling, torch.full_like(out_one.coupling, 0.5))
    assert not torch.allclose(out_one.vectors, out_base.vectors, atol=1e-5)


def _make_vector_1_longer(model: PIADE) -> PIADE:
    """A copy whose routing weights for vector 0 are shrunk, so vector 1 is the longer one for any input."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.routing.W[0].mul_(1e-3)
    return model


def _decoded_vectors(model: PIADE, x: torch.Tensor):
    """Run the model and capture the vector fed to the upsampling layer."""
    seen = {}
    hook = model.upsampling.register_forward_hook(lambda m, i, o: seen.__setitem__("v", i[0].detach().clone()))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        hook.remove()
    return out, seen["v"]


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_decoded_vector(models, preset):
    model = _make_vector_1_longer(models(preset, 32))
    x = torch.rand(B, 3, 32, 32)
    for training in (True, False):
        model.train(training)
        out, decoded = _decoded_vectors(model, x)
        assert (out.lengths[:, 1] > out.lengths[:, 0]).all()
        if preset == "paper" and training:
            expected = torch.zeros(B, dtype=torch.long)  # the first vector while training
        else:
            expected = out.lengths.argmax(dim=1)  # the longest one (here vector 1)
            assert (expected == 1).all()
        assert torch.equal(out.selected, expected)
        assert torch.allclose(decoded, out.vectors[torch.arange(B), expected])


def _assert_semi_orthogonal(w: torch.Tensor, scale: float = 1.0) -> None:
    """Rows or columns (whichever are fewer) of the 2-D view of ``w`` are orthonormal (times ``scale``)."""
    m = w.detach().reshape(w.shape[0], -1)
    if m.shape[0] > m.shape[1]:
        m = m.T
    gram = m @ m.T
    assert torch.allclose(gram, scale * torch.eye(gram.shape[0]), atol=1e-4), "not (semi-)orthogonal"


def test_orthogonal_init_of_new_layers(models):
    model = models("paper", 120)
    first_linear, last_linear = model.upsampling.net[0], model.upsampling.net[6]
    _assert_semi_orthogonal(first_linear.weight)  # (128, 64): W^T W = I
    _assert_semi_orthogonal(last_linear.weight)  # (512*8*8, 512)
    assert torch.count_nonzero(first_linear.bias) == 0
    _assert_semi_orthogonal(model.encoder.se[2].fc1.weight)
    _assert_semi_orthogonal(model.pyramid.branches[0][1].weight)
    _assert_semi_orthogonal(model.decoder.net[0].weight)  # ConvTranspose2d (1024, 16, 3, 3)
    for w in (model.routing.W[0, 0], model.routing.W[1, 679]):  # W_ij^T W_ij = I / n_caps ("orthogonal_fanin")
        assert torch.allclose(w.T @ w, torch.eye(8) / 680, atol=1e-6)


def test_default_init_is_not_orthogonal(models):
    model = models("authors_code", 32)
    w = model.upsampling.net[0].weight.detach()
    assert not torch.allclose(w.T @ w, torch.eye(64), atol=1e-2)
    assert model.routing.W.std().item() == pytest.approx(0.01, rel=0.05)


def test_bad_image_size_and_inputs(models):
    with pytest.raises(ValueError, match="image_size must be one of"):
        build_model("paper", 64)
    with pytest.raises(ValueError, match="n_vectors"):
        build_model("paper", 32, n_vectors=0)
    with pytest.raises(KeyError, match="unknown preset field"):
        build_model("paper", 32, not_a_field=1)
    model = models("paper", 32).eval()
    with pytest.raises(ValueError, match=r"expects images \(B, 3, 32, 32\).*got shape \(2, 1, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 120, 120\)"):
        model(torch.rand(2, 3, 120, 120))
    with pytest.raises(ValueError, match="at least 2 images"):
        model.train()(torch.rand(1, 3, 32, 32))
    model.eval()


def test_config_round_trip(models):
    model = models("paper", 32).eval()
    config = json.loads(json.dumps(model.config))
    assert config["image_size"] == 32 and config["n_vectors"] == 2 and config["pretrained"] is False
    rebuilt = model_from_config(config).eval()
    assert rebuilt.config == config
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(B, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x).reconstruction, model(x).reconstruction, atol=1e-6)


def test_config_round_trip_keeps_overrides():
    model = build_model("authors_code", 32, n_vectors=1, routing_iterations=2, pyramid_relu=False)
    rebuilt = model_from_config(json.loads(json.dumps(model.config)))
    assert rebuilt.config == model.config
    assert rebuilt.routing.iterations == 2 and rebuilt.n_vectors == 1
    assert not any(isinstance(m, torch.nn.ReLU) for m in rebuilt.pyramid.modules())


def test_se_block_matches_eq_1_2():
    torch.manual_seed(4)
    se = SEBlock(channels=8, reduction=2)
    x = torch.randn(2, 8, 5, 5)
    z = x.numpy().mean(axis=(2, 3))  # Eq. 1
    w1, w2 = se.fc1.weight.detach().numpy(), se.fc2.weight.detach().numpy()
    s = 1 / (1 + np.exp(-(np.maximum(z @ w1.T, 0) @ w2.T)))  # Eq. 2
    np.testing.assert_allclose(se(x).detach().numpy(), x.numpy() * s[:, :, None, None], rtol=1e-5, atol=1e-6)
    assert w1.shape == (4, 8)


def test_primary_capsules_group_channels_of_one_cell():
    torch.manual_seed(5)
    pyramid = PyramidPooling(in_channels=6, scales=(1, 2), channels=(16, 8), capsule_dim=8).eval()
    x = torch.randn(2, 6, 4, 4)
    u = pyramid(x)
    assert u.shape == (2, (16 * 1 + 8 * 4) // 8, 8) == (2, pyramid.n_caps, 8)
    global_branch = pyramid.branches[0](x)  # (2, 16, 1, 1): capsules 0 and 1
    assert torch.allclose(u[:, 1], global_branch[:, 8:16, 0, 0])
    fine_branch = pyramid.branches[1](x)  # (2, 8, 2, 2): one capsule per cell, row-major, after the global ones
    assert torch.allclose(u[:, 2 + 3], fine_branch[:, :, 1, 1])


def test_routing_runs_in_float32_under_autocast():
    torch.manual_seed(6)
    routing = DynamicRouting(n_in=12, n_out=2, out_dim=16, weight_init="orthogonal")
    u = 50 * torch.randn(2, 12, 8)  # squared norms of s would overflow in float16
    v_ref, c_ref = routing(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, c = routing(u.bfloat16())
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert torch.allclose(v, v_ref, atol=2e-2) and torch.allclose(c, c_ref, atol=2e-2)


def _routing_textbook(routing: DynamicRouting, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 as written (predictions u_hat materialised, broadcast products and sums): the form the
    matrix-product implementation of DynamicRouting._route reformulates."""
    u_hat = torch.einsum("jidk,bik->bijd", routing.W, u)  # (B, n_in, n_out, out_dim)
    u_hat_routing = u_hat.detach() if routing.detach else u_hat
    b = u.new_zeros(u.shape[0], routing.n_in, routing.n_out)
    for it in range(routing.iterations):
        c = torch.softmax(b, dim=-1)
        last = it == routing.iterations - 1
        preds = u_hat if last else u_hat_routing
        v = squash((c.unsqueeze(-1) * preds).sum(dim=1), routing.squash_a)
        if not last:
            b = b + (preds * v.unsqueeze(1)).sum(dim=-1)
    return v, c


@pytest.mark.parametrize("detach", [False, True])
def test_routing_matrix_products_equal_textbook_form(detach):
    """Exact reformulation: values and gradients (W and u) equal the textbook form to 1e-12 in float64,
    and to float32 rounding in float32."""
    torch.manual_seed(7)
    routing = DynamicRouting(
        n_in=40, in_dim=8, n_out=2, out_dim=16, iterations=3, detach=detach, weight_init="orthogonal"
    )
    u0 = torch.randn(3, 40, 8)
    results = {}
    for dtype in (torch.float64, torch.float32):
        r = copy.deepcopy(routing).to(dtype)
        for name, fn in (("bmm", r), ("textbook", lambda u, r=r: _routing_textbook(r, u))):
            r.zero_grad()
            u = u0.to(dtype).clone().requires_grad_(True)
            v, c = fn(u)
            (v.pow(2).sum() + (c * torch.arange(2, dtype=dtype)).sum()).backward()
            results[name, dtype] = (v.detach(), c.detach(), r.W.grad.clone(), u.grad.clone())
    for a, b in zip(results["bmm", torch.float64], results["textbook", torch.float64]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(results["bmm", torch.float32], results["textbook", torch.float32]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert results["bmm", torch.float32][0].shape == (3, 2, 16) and results["bmm", torch.float32][1].shape == (3, 40, 2)


def test_reconstruction_is_float32_under_autocast(models):
    """The decoder's last layer runs in float32 under autocast: reconstructions are not rounded to 16 bits."""
    model = models("paper", 32).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.reconstruction.dtype == torch.float32
    with torch.no_grad():
        ref = model(x).reconstruction
    assert (out.reconstruction - ref).abs().max() < 5e-2
