"""ODE-Net / ResNet classifiers and augmented neural ODEs."""

import torch

from neuralode_helpers import (
    AugmentedNODE,
    ODEBlock,
    ODENet,
    ODENetClassifier,
    ResNetClassifier,
    count_parameters,
    odeint,
    saved_tensor_bytes,
)


def test_resnet_is_euler_with_one_field_per_step():
    torch.manual_seed(0)
    net = ResNetClassifier(in_dim=5, width=4, hidden=6, n_classes=3, depth=3)
    x = torch.randn(7, 5)
    h = net.stem(x)
    for block in net.blocks:
        h = h + block.f(h) / 3
    assert torch.allclose(net(x), net.head(h))
    # parameters: stem + 3 blocks + head
    assert count_parameters(net) == (5 * 4 + 4) + 3 * (4 * 6 + 6 + 6 * 4 + 4) + (4 * 3 + 3)


def test_odeblock_matches_a_direct_solve_and_records_nfe():
    torch.manual_seed(0)
    field = ODENet(4, hidden=(8,), activation=torch.nn.Tanh)
    block = ODEBlock(field, rtol=1e-6, atol=1e-6)
    h = torch.randn(3, 4)
    ref = odeint(field, h, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6)[-1]
    out = block(h)
    assert torch.allclose(out, ref, atol=1e-6)
    assert block.stats.forward.nfe > 0
    out.sum().backward()
    assert block.stats.backward.nfe > 0
    assert all(p.grad is not None for p in field.parameters())


def test_odenet_graph_memory_does_not_grow_with_tolerance_but_resnet_grows_with_depth():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    net = ODENetClassifier(in_dim=8, width=4, hidden=8, n_classes=3)

    def graph(model):
        return saved_tensor_bytes(lambda: model(x), exclude=list(model.parameters()))[1]

    sizes = []
    for tol in (1e-2, 1e-6):
        net.block.rtol = net.block.atol = tol
        sizes.append((graph(net), net.block.stats.forward.nfe))
    assert sizes[0][0] == sizes[1][0] and sizes[1][1] > sizes[0][1]
    net.block.adjoint = False                      # backprop through the steps: grows
    assert graph(net) > 3 * sizes[1][0]
    res = [graph(ResNetClassifier(in_dim=8, width=4, hidden=8, n_classes=3, depth=d))
           for d in (1, 4)]
    assert res[1] > 2 * res[0]


def _fit_swap(augment, steps=40):
    torch.manual_seed(0)
    x = torch.tensor([[-1.0], [1.0]])
    m = AugmentedNODE(dim=1, augment=augment, hidden=16, n_steps=4)
    opt = torch.optim.Adam(m.parameters(), lr=5e-2)
    for _ in range(steps):
        loss = ((m(x)[:, :1] + x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((m(x)[:, :1] + x) ** 2).mean().item()


def test_plain_1d_flow_cannot_swap_two_points_but_an_augmented_one_can():
    # an ODE flow preserves order in 1-D, so the MSE of x -> -x on {-1, 1} is at least 1
    assert _fit_swap(augment=0) > 0.99
    assert _fit_swap(augment=1) < 0.05


def test_augmented_node_shapes():
    m = AugmentedNODE(dim=2, augment=3, hidden=8, out_dim=1, n_steps=4)
    x = torch.randn(5, 2)
    assert m.lift(x).shape == (5, 5) and torch.equal(m.lift(x)[:, 2:], torch.zeros(5, 3))
    assert m(x).shape == (5, 1)
    assert m.trajectory(x, torch.linspace(0, 1, 3)).shape == (3, 5, 5)


def test_augmented_node_backprop_and_adjoint_give_the_same_gradient():
    # with fixed-step RK4 the two differ only by the backward solve's error, and only the
    # backprop graph grows with the number of steps
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64)
    grads, graphs = [], []
    for adjoint in (True, False):
        torch.manual_seed(1)
        m = AugmentedNODE(dim=2, augment=1, hidden=8, out_dim=1, n_steps=8,
                          adjoint=adjoint).double()
        m(x).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        graphs.append(saved_tensor_bytes(lambda m=m: m(x), exclude=list(m.parameters()))[1])
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)
    assert graphs[1] > 3 * graphs[0]


def test_classifiers_and_blocks_check_what_they_are_given():
    import pytest

    torch.manual_seed(0)
    for model in (ODENetClassifier(in_dim=6, width=4, hidden=8),
                  ResNetClassifier(in_dim=6, width=4, hidden=8)):
        with pytest.raises(ValueError, match=r"x must have shape \(B, 6\) .*got \(3, 10\)"):
            model(torch.zeros(3, 10))
        assert model(torch.zeros(3, 6)).shape == (3, 10)
    with pytest.raises(TypeError, match="field must be an nn.Module"):
        ODEBlock(lambda t, h: -h)
    with pytest.raises(ValueError, match="unknown method 'rk45'"):
        ODEBlock(ODENet(2, time_dependent=False), method="rk45")
    with pytest.raises(ValueError, match="rtol must be a positive number"):
        ODENetClassifier(in_dim=6, rtol=0.0)
