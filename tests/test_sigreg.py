import importlib
import math

import pytest
import torch

from tsjepa.sigreg import NULL_MEAN, quadrature, random_directions, sigreg, sigreg_reference


def gaussian(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def fine_grid_reference(z: torch.Tensor, directions: torch.Tensor, t_max: float) -> torch.Tensor:
    """N * int_{-t_max}^{t_max} |phi_hat - phi|^2 w dt straight from the formula: float64, 4001-point grid."""
    x = z.double() @ directions.double()
    t = torch.linspace(-t_max, t_max, 4001, dtype=torch.float64)
    err = torch.cat([
        (torch.cos(x[..., None] * tc).mean(0) - torch.exp(-tc**2 / 2)) ** 2
        + torch.sin(x[..., None] * tc).mean(0) ** 2
        for tc in t.split(200)
    ], dim=-1)  # [M, 4001]
    integral = torch.trapezoid(err * torch.exp(-t**2 / 2), t, dim=-1)
    return (x.shape[0] * integral).mean()


def test_null_mean_constant():
    assert NULL_MEAN == pytest.approx(math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3))


@pytest.mark.parametrize("n,d,m,knots,t_max,fine_rel", [
    (64, 8, 16, 17, 3.0, 1e-4), (300, 32, 64, 33, 3.0, 1e-5), (1000, 16, 8, 65, 3.0, 1e-5),
    (512, 24, 32, 49, 4.0, 1e-5),
])
def test_fast_path_matches_reference(n, d, m, knots, t_max, fine_rel):
    z = gaussian(n, d) * 1.3 + 0.2
    a = random_directions(d, m, seed=1, step=0)
    fast = sigreg(z, a, knots=knots, t_max=t_max, chunk=100)
    same_quadrature = sigreg_reference(z.double(), a.double(), knots=knots, t_max=t_max)
    assert fast.dtype == torch.float32
    assert float(fast) == pytest.approx(float(same_quadrature), rel=1e-5)
    # the formula itself, integrated on a fine grid: the default 17-knot trapezoid rule is within ~2e-5,
    # 33 knots or more within 1e-5
    assert float(fast) == pytest.approx(float(fine_grid_reference(z, a, t_max)), rel=fine_rel)


def test_quadrature_weights_integrate_the_gaussian_window():
    t, w = quadrature(101, 5.0)
    assert float((w).sum()) == pytest.approx(math.sqrt(2 * math.pi), rel=1e-4)


def test_gaussian_near_null_and_collapse_is_large():
    z = gaussian(4096, 64)
    value = float(sigreg(z, num_slices=256))
    assert 0.8 < value < 1.4
    collapsed = torch.zeros(4096, 64) + 1e-3 * gaussian(4096, 64, seed=1)
    assert float(sigreg(collapsed, num_slices=256)) > 100 * value


def test_analytic_backward_matches_autograd_of_reference():
    z = gaussian(50, 6, seed=2).double().requires_grad_()
    a = random_directions(6, 12, seed=0, step=3).double()
    torch.autograd.gradcheck(lambda x: sigreg(x, a, knots=9, chunk=16), (z,))
    z1 = gaussian(50, 6, seed=2).requires_grad_()
    z2 = gaussian(50, 6, seed=2).double().requires_grad_()
    sigreg(z1, a.float()).backward()
    sigreg_reference(z2, a).backward()
    torch.testing.assert_close(z1.grad.double(), z2.grad, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_computes_in_float32():
    z = gaussian(512, 32).requires_grad_()
    ref = sigreg(z, num_slices=64)
    (g_ref,) = torch.autograd.grad(ref, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sigreg(z, num_slices=64)
    (g_out,) = torch.autograd.grad(out, z)
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(float(ref), rel=1e-6)
    torch.testing.assert_close(g_out, g_ref)


def test_directions_are_unit_and_reproducible():
    a = random_directions(16, 32, seed=5, step=7)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(32))
    torch.testing.assert_close(a, random_directions(16, 32, seed=5, step=7))
    assert not torch.allclose(a, random_directions(16, 32, seed=5, step=8))


def test_clear_errors():
    with pytest.raises(ValueError, match="at least 2 samples"):
        sigreg(torch.randn(1, 4))
    with pytest.raises(ValueError, match="non-finite"):
        sigreg(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="dimension 5 but embeddings have D=4"):
        sigreg(torch.randn(10, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        sigreg(torch.randn(10))


def test_compiled_backend_matches_eager():
    z = gaussian(700, 24, seed=4).mul(1.2).requires_grad_()
    a = random_directions(24, 48, seed=0, step=0)
    eager = sigreg(z, a, backend="eager", chunk=256)
    (g_eager,) = torch.autograd.grad(eager, z)
    compiled = sigreg(z, a, backend="compiled")
    (g_compiled,) = torch.autograd.grad(compiled, z)
    assert float(compiled) == pytest.approx(float(eager), rel=1e-5)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="backend"):
        sigreg(z, a, backend="fast")


# --- statistical behaviour of the sliced test --------------------------------------------------------------
D, M = 16, 32


def alternatives(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, D, generator=g)
    t3 = torch.distributions.StudentT(3.0).sample((n, D)) / 3.0**0.5  # unit variance, heavy tails
    low_rank = torch.randn(n, 4, generator=g) @ torch.randn(4, D, generator=g) / 2.0
    return {
        "mean shift": base + 0.25,
        "scale": base * 1.3,
        "heavy tail": t3,
        "low rank": low_rank,
        "collapsed": torch.zeros(n, D) + 1e-4 * base,
    }


def test_null_level_is_stable_across_n():
    for n in (128, 1024, 8192):
        values = torch.tensor([float(sigreg(gaussian(n, D, seed=s), num_slices=M, step=s)) for s in range(24)])
        stderr = values.std() / len(values) ** 0.5
        assert abs(values.mean() - NULL_MEAN) < 4 * stderr + 0.02, (n, values)


def test_statistic_grows_with_n_under_alternatives():
    torch.manual_seed(0)
    for name in alternatives(8, 0):
        small = float(sigreg(alternatives(256, 1)[name], num_slices=M))
        large = float(sigreg(alternatives(4096, 1)[name], num_slices=M))
        assert large > 4 * small > 0, name
        assert large > 5 * NULL_MEAN, name


def test_type_one_error_and_power_against_a_simulated_null():
    n, alpha = 256, 0.05
    null = torch.tensor([float(sigreg(gaussian(n, D, seed=s), num_slices=M, step=s)) for s in range(400)])
    threshold = torch.quantile(null, 1 - alpha)
    fresh = torch.tensor([float(sigreg(gaussian(n, D, seed=10_000 + s), num_slices=M, step=s)) for s in range(400)])
    type_one = float((fresh > threshold).float().mean())
    assert 0.02 < type_one < 0.09  # alpha = 0.05, +-3 standard errors of a 400-draw estimate
    torch.manual_seed(1)
    for name in ("mean shift", "scale", "heavy tail", "low rank"):
        rejections = [float(sigreg(alternatives(n, 100 + s)[name], num_slices=M, step=s)) > threshold
                      for s in range(40)]
        power = sum(rejections) / len(rejections)
        assert power >= 0.8, (name, power)


def test_auto_backend_compiles_only_large_cpu_calls_when_a_compiler_works(monkeypatch, caplog):
    import logging

    module = importlib.import_module("tsjepa.sigreg")  # the package's `sigreg` attribute is the function

    small, large = torch.zeros(64, 256), torch.zeros(1024, 256)
    assert module.resolve_backend("auto", small) == "eager"  # below AUTO_MIN_ELEMENTS: no compilation
    assert module.resolve_backend("eager", large) == "eager"
    monkeypatch.setattr(module, "_AUTO_CPU", {})
    monkeypatch.setattr(module, "cpu_compiler", lambda: None)
    with caplog.at_level(logging.INFO, logger="tsjepa.sigreg"):
        assert module.resolve_backend("auto", large) == "eager"
    assert "no C++ compiler" in caplog.text
    monkeypatch.setattr(module, "_AUTO_CPU", {})
    monkeypatch.setattr(module, "cpu_compiler", lambda: "/usr/bin/g++")

    def broken(backend):
        raise RuntimeError("inductor failed")

    monkeypatch.setattr(module, "_kernels", broken)
    with caplog.at_level(logging.INFO, logger="tsjepa.sigreg"):
        assert module.resolve_backend("auto", large) == "eager"
        assert module.resolve_backend("auto", large) == "eager"
    assert caplog.text.count("failed to build") == 1  # decided and logged once per process


def test_auto_backend_uses_the_compiled_kernel_where_it_works(monkeypatch):
    module = importlib.import_module("tsjepa.sigreg")  # the package's `sigreg` attribute is the function

    if module.cpu_compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    monkeypatch.setattr(module, "_AUTO_CPU", {})
    z = torch.randn(1024, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    a = random_directions(16, 256, seed=0, step=0)
    assert module.resolve_backend("auto", z @ a) == "compiled"
    auto, eager = sigreg(z, a, backend="auto"), sigreg(z, a, backend="eager")
    assert float(auto) == pytest.approx(float(eager), rel=1e-5)


def test_per_group_statistics_equal_separate_calls():
    from tsjepa.sigreg import sigreg_per_group

    z = torch.randn(5, 40, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = random_directions(8, 32, seed=0, step=3).double()
    grouped = sigreg_per_group(z, a)
    separate = torch.stack([sigreg(g, a, sync=False) for g in z])
    torch.testing.assert_close(grouped, separate)
    with pytest.raises(ValueError, match="expects"):
        sigreg_per_group(z[:, :1], a)
