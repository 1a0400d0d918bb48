import math

import pytest
import torch

from tsjepa.sigreg import NULL_MEAN, quadrature, random_directions, sigreg, sigreg_reference


def gaussian(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def fine_grid_reference(z: torch.Tensor, directions: torch.Tensor, t_max: float) -> torch.Tensor:
    """N * int_{-t_max}^{t_max} |phi_hat - phi|^2 w dt, float64, by a 4001-point trapezoid rule."""
    x = z.double() @ directions.double()
    t = torch.linspace(-t_max, t_max, 4001, dtype=torch.float64)
    xt = x[..., None] * t
    err = (torch.cos(xt).mean(0) - torch.exp(-t**2 / 2)) ** 2 + torch.sin(xt).mean(0) ** 2
    integral = torch.trapezoid(err * torch.exp(-t**2 / 2), t, dim=-1)
    return (x.shape[0] * integral).mean()


def test_null_mean_constant():
    assert NULL_MEAN == pytest.approx(math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3))


@pytest.mark.parametrize("n,d,m,knots", [(64, 8, 16, 17), (300, 32, 64, 33), (1000, 16, 8, 65)])
def test_fast_path_matches_reference(n, d, m, knots):
    z = gaussian(n, d) * 1.3 + 0.2
    a = random_directions(d, m, seed=1, step=0)
    fast = sigreg(z, a, knots=knots)
    exact = sigreg_reference(z.double(), a.double(), knots=knots)
    assert fast.dtype == torch.float32
    assert float(fast) == pytest.approx(float(exact), rel=1e-5)
    # the quadrature converges to the integral as knots grow
    if knots == 65:
        assert float(fast) == pytest.approx(float(fine_grid_reference(z, a, 3.0)), rel=1e-4)


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
