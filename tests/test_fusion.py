"""First-stage fusion modules and the contrastive regularisers (imf_kg/fusion)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from tensorly.backend import backend_context
from tensorly.tenalg import multi_mode_dot

from imf_kg.fusion import (
    ConcatFusion, ReferenceMutanFusion, TuckerFusion, build_fusion, info_nce, reference_contrastive_loss,
)


def _inputs(dims, batch=5, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=generator, dtype=dtype) for d in dims]


def _randomise(module):
    """Random parameters (incl. biases), so that no test passes because of a special initial value."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    return module


# ---------------------------------------------------------------------------------------------- Tucker
@pytest.mark.parametrize("dims,latent,normalize", [
    ([3, 4], None, False), ([3, 4, 2], None, False), ([3, 4, 2], 3, False), ([2, 3], 2, False), ([3, 4, 2], 3, True),
])
def test_tucker_forward_equals_full_multi_mode_product(dims, latent, normalize):
    """p = p_c x_1 M_1 ... x_M M_M x_{M+1} M_d, dense tensor rebuilt with tensorly, contracted mode by mode
    (with the inputs RMS-normalised first when ``normalize_inputs``)."""
    fusion = _randomise(TuckerFusion(dims, out_dim=4, rank=5, latent_dim=latent, normalize_inputs=normalize)
                        .double()).eval()
    xs = raw = _inputs(dims)
    if normalize:
        xs = [x / x.pow(2).mean(dim=1, keepdim=True).sqrt() for x in raw]
    weight = fusion.full_weight()
    assert weight.shape == tuple(d + 1 for d in dims) + (4,)
    with backend_context("pytorch", local_threadsafe=True):
        expected = torch.stack([
            multi_mode_dot(weight, [torch.cat([x[b], x.new_ones(1)]) for x in xs], modes=list(range(len(dims))))
            for b in range(xs[0].shape[0])
        ])
    torch.testing.assert_close(fusion(raw), expected)


def test_tucker_full_core_is_the_cp_sum_written_out():
    fusion = _randomise(TuckerFusion([2, 3], out_dim=2, rank=4).double())
    core = fusion.full_core()
    a1 = torch.cat([fusion.core_factors[0], fusion.core_biases[0][None]]).detach()
    a2 = torch.cat([fusion.core_factors[1], fusion.core_biases[1][None]]).detach()
    out = fusion.core_output.detach()
    by_hand = torch.zeros(3, 4, 2, dtype=torch.float64)
    for i, j, o, k in itertools.product(range(3), range(4), range(2), range(4)):
        by_hand[i, j, o] += a1[i, k] * a2[j, k] * out[k, o]
    torch.testing.assert_close(core, by_hand)


@pytest.mark.parametrize("latent", [None, 3])
def test_tucker_shapes_and_gradients_reach_every_parameter(latent):
    fusion = TuckerFusion([4, 6, 5], out_dim=7, rank=8, latent_dim=latent, dropout=0.1)
    xs = [x.float().requires_grad_() for x in _inputs([4, 6, 5], batch=9)]
    out = fusion(xs)
    assert out.shape == (9, 7)
    out.pow(2).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(x.grad.abs().sum() > 0 for x in xs)


def test_tucker_is_multilinear_in_each_modality():
    """Scaling one input by a scales the non-constant part linearly: f(a x1, x2) - f(0, x2) = a (f(x1, x2) - f(0, x2))."""
    fusion = _randomise(TuckerFusion([3, 4], out_dim=2, rank=6, normalize_inputs=False).double()).eval()
    x1, x2 = _inputs([3, 4])
    base = fusion([torch.zeros_like(x1), x2])
    torch.testing.assert_close(fusion([2.5 * x1, x2]) - base, 2.5 * (fusion([x1, x2]) - base))


def test_tucker_output_scale_does_not_depend_on_input_scale():
    """RMS-normalised inputs: three 0.01-scale embeddings fuse to unit-scale vectors, not 1e-6 ones."""
    torch.manual_seed(0)
    fusion = TuckerFusion([16, 16, 16], out_dim=16, rank=64).eval()
    xs = [torch.randn(256, 16) for _ in range(3)]
    unit = fusion(xs)
    torch.testing.assert_close(fusion([0.01 * x for x in xs]), unit, rtol=1e-4, atol=1e-5)
    assert 0.3 < float(unit.detach().std()) < 3
    raw = TuckerFusion([16, 16, 16], out_dim=16, rank=64, normalize_inputs=False).eval()
    assert float(raw([0.01 * x for x in xs]).detach().std()) < 1e-4  # the problem the normalisation removes


def test_every_fusion_exposes_per_modality_representations():
    xs = [torch.randn(5, 4), torch.randn(5, 6)]
    tucker = TuckerFusion([4, 6], out_dim=3, rank=7).eval()
    assert [r.shape for r in tucker.modality_representations(xs)] == [(5, 7), (5, 7)]
    concat = ConcatFusion([4, 6], out_dim=3).eval()
    parts = concat.modality_representations(xs)
    torch.testing.assert_close(parts[0] + parts[1] + concat.projection.bias, concat(xs))
    mutan = ReferenceMutanFusion([4, 6], out_dim=3, rank=2).eval()
    assert [r.shape for r in mutan.modality_representations(xs)] == [(5, 6), (5, 6)]


def test_tucker_rejects_single_modality_and_wrong_arity():
    with pytest.raises(ValueError):
        TuckerFusion([4], out_dim=4, rank=2)
    fusion = TuckerFusion([4, 4], out_dim=4, rank=2)
    with pytest.raises(ValueError):
        fusion([torch.randn(2, 4)])


def test_tucker_dropout_only_in_training():
    fusion = TuckerFusion([8, 8], out_dim=4, rank=8, dropout=0.5)
    xs = [torch.randn(6, 8), torch.randn(6, 8)]
    fusion.eval()
    torch.testing.assert_close(fusion(xs), fusion(xs))
    fusion.train()
    torch.manual_seed(0)
    a = fusion(xs)
    assert not torch.allclose(a, fusion(xs))


# ---------------------------------------------------------------------------------- concat and MUTAN
def test_concat_fusion_is_a_linear_map_of_the_concatenation():
    fusion = ConcatFusion([2, 3, 4], out_dim=5).double()
    xs = _inputs([2, 3, 4])
    weight, bias = fusion.projection.weight, fusion.projection.bias
    torch.testing.assert_close(fusion(xs), torch.cat(xs, 1) @ weight.t() + bias)
    fusion(xs).sum().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_reference_mutan_matches_published_formula():
    """z = ReLU(sum_rho prod_m ReLU(A^m_rho x^m + a^m_rho)) (IMF_SPEC Sec. 4), computed by hand."""
    fusion = _randomise(ReferenceMutanFusion([3, 3, 3], out_dim=3, rank=2, dropout=0.2).double()).eval()
    xs = _inputs([3, 3, 3])
    expected = torch.zeros(5, 3, dtype=torch.float64)
    for rho in range(2):
        term = torch.ones(5, 3, dtype=torch.float64)
        for m in range(3):
            linear = fusion.branches[m][rho][1]
            term = term * torch.relu(xs[m] @ linear.weight.t() + linear.bias)
        expected += term
    torch.testing.assert_close(fusion(xs), torch.relu(expected))
    assert (fusion(xs) >= 0).all()
    # published sizes: 3 modalities x 2 ranks x Linear(256, 256)
    published = ReferenceMutanFusion([256] * 3, 256)
    assert sum(p.numel() for p in published.parameters()) == 6 * (256 * 256 + 256)


def test_build_fusion_by_name():
    assert isinstance(build_fusion("tucker", [4, 4], 4, rank=3), TuckerFusion)
    assert isinstance(build_fusion("concat", [4, 4], 4, rank=3), ConcatFusion)
    assert isinstance(build_fusion("mutan", [4, 4], 4, rank=2), ReferenceMutanFusion)
    with pytest.raises(ValueError):
        build_fusion("nope", [4, 4], 4, rank=2)


# ------------------------------------------------------------------------------------------ InfoNCE
def _views(kind, batch=32, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, dim, generator=generator)
    noise = torch.randn(batch, dim, generator=generator)
    if kind == "aligned":
        other = base + 0.05 * noise
    elif kind == "partial":
        other = base + 1.0 * noise
    elif kind == "random":
        other = noise
    elif kind == "permuted":
        other = base[torch.randperm(batch, generator=generator)]
    return [base, other]


def test_info_nce_is_lowest_when_the_views_of_each_entity_agree():
    loss = {kind: float(info_nce(_views(kind))) for kind in ("aligned", "partial", "random", "permuted")}
    assert loss["aligned"] < loss["partial"] < loss["random"]
    # pairing each entity with another entity's view is worse than unrelated views: the wrong pair is the most
    # similar one, so the loss pushes it away
    assert loss["permuted"] > loss["random"]
    assert loss["aligned"] < 0.05


def test_info_nce_equals_the_definition_written_with_loops():
    views = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
    tau = 0.5
    pair_losses = []
    for a, b in itertools.combinations(range(3), 2):
        za, zb = F.normalize(views[a], dim=1), F.normalize(views[b], dim=1)
        total = 0.0
        for i in range(4):
            row = torch.stack([za[i] @ zb[j] / tau for j in range(4)])
            col = torch.stack([zb[i] @ za[j] / tau for j in range(4)])
            total += -(row[i] - torch.logsumexp(row, 0)) - (col[i] - torch.logsumexp(col, 0))
        pair_losses.append(total / 8)
    torch.testing.assert_close(info_nce(views, temperature=tau).double(), torch.stack(pair_losses).mean())


def test_info_nce_ignores_entities_missing_a_modality():
    base, other = _views("aligned", batch=8)
    mask = torch.tensor([True, True, False, True, True, False, True, True])
    loss = info_nce([base, other], masks=[None, mask])
    changed = other.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), other.shape[1])
    torch.testing.assert_close(info_nce([base, changed], masks=[None, mask]), loss)
    torch.testing.assert_close(loss, info_nce([base[mask], other[mask]]))


def test_info_nce_gradients_and_degenerate_batches():
    views = [torch.randn(6, 4, requires_grad=True) for _ in range(2)]
    info_nce(views).backward()
    assert all(v.grad.abs().sum() > 0 for v in views)
    single = [torch.randn(1, 4, requires_grad=True) for _ in range(2)]
    loss = info_nce(single)  # no negatives: zero, still differentiable
    assert float(loss.detach()) == 0.0
    loss.backward()
    with pytest.raises(ValueError):
        info_nce([torch.randn(3, 4)])


def test_reference_contrastive_loss_matches_published_maths():
    """Frobenius normalisation, mean of cross-modal same-entity dots, same-modality negatives, softplus."""
    views = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
    s, v, t = (x / x.norm() for x in views)  # whole matrix, as the code
    expected = 0.0
    for i in range(4):
        pos = (s[i] @ v[i] + s[i] @ t[i] + v[i] @ t[i]) / 3
        neg = sum(x[i] @ x[j] for x in (s, v, t) for j in range(4) if j != i) / 12  # diagonals count as 0
        expected += F.softplus(neg - pos) / 4
    torch.testing.assert_close(reference_contrastive_loss(views).double(), expected)
