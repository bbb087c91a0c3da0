import pytest
import torch

from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from plotlib.das import (Cell, MaskSchedule, boundary_size, boundary_weights, kept_units, evaluate_rotation, evaluate_rotations, initial_rotation,
                         orthonormal, random_subspace, train_rotations)
from plotlib.handles import Handle, evaluate_handle
from plotlib.metrics import iia
from plotlib.patching import Edit, Subspace, interchange, run_with_edits, site_subspace, sweep_single_sites
from plotlib.sites import Location, Site, Support


def test_self_patch_changes_nothing(mlp, task, cached_bank):
    x = cached_bank.x_base
    acts = cached_bank.base_acts(mlp.taps)
    plain = mlp(x)
    edits = [Edit(Location(layer), Subspace(mask=torch.ones(16)), 1.0, acts[layer]) for layer in mlp.taps]
    assert torch.allclose(run_with_edits(mlp, x, edits), plain, atol=1e-6)          # hooks, full forward
    assert torch.allclose(run_with_edits(mlp, x, edits, acts), plain, atol=1e-6)    # resumed from the cache


def test_full_layer_interchange_reproduces_source_output(mlp, cached_bank):
    source_logits = cached_bank.acts("source", "logits")
    for layer in mlp.taps:
        edit = Edit(Location(layer), site_subspace(Site(Location(layer)), 16), 1.0, cached_bank.acts("source", layer))
        hooked = run_with_edits(mlp, cached_bank.x_base, [edit])
        resumed = run_with_edits(mlp, cached_bank.x_base, [edit], cached_bank.base_acts([layer]))
        assert torch.allclose(hooked, source_logits, atol=1e-5)
        assert torch.allclose(resumed, source_logits, atol=1e-5)


def test_stacked_sweep_equals_one_site_at_a_time(mlp, cached_bank):
    layer = "h2"
    subspaces = [site_subspace(Site(Location(layer), Support("coords", (i,))), 16) for i in range(16)]
    stacked = sweep_single_sites(mlp, layer, cached_bank.acts("base", layer), cached_bank.acts("source", layer), subspaces, max_rows=1000)
    for i in (0, 7, 15):
        edit = Edit(Location(layer), subspaces[i], 1.0, cached_bank.acts("source", layer))
        assert torch.allclose(stacked[i], run_with_edits(mlp, cached_bank.x_base, [edit]), atol=1e-5)


def test_multi_layer_handle_matches_hooked_full_forward(mlp, cached_bank):
    handle = Handle((Site.parse("h1/coords[2]"), Site.parse("h3/coords[5]")), (0.7, 0.3), 2.0)
    widths = {layer: 16 for layer in mlp.taps}
    # evaluate_handle resumes from h1's cached activation; compare with hooks over a full forward
    edits = [Edit(s.location, site_subspace(s, 16), 2.0 * w, cached_bank.acts("source", s.location.layer))
             for s, w in zip(handle.sites, handle.weights)]
    task_predict = cached_bank.task.readout.predict(run_with_edits(mlp, cached_bank.x_base, edits))
    got = evaluate_handle(mlp, cached_bank, handle, "WX", widths)
    want = iia(task_predict, cached_bank.labels("WX"), cached_bank.sensitive("WX"))
    assert got == want and task_predict.shape[0] == len(cached_bank.frame)


def test_das_with_full_dimension_equals_full_interchange(mlp, cached_bank):
    q = random_subspace(16, 16, seed=3)
    assert torch.allclose(q.T @ q, torch.eye(16), atol=1e-5)
    for layer in mlp.taps:
        das = evaluate_rotation(mlp, cached_bank, layer, "WX", q)
        full = evaluate_handle(mlp, cached_bank, Handle((Site(Location(layer)),), (1.0,), 1.0), "WX", {layer: 16})
        assert das == full


@pytest.mark.parametrize("room,k", [(16, 1), (16, 5), (16, 16), (40, 12)])
def test_batched_orthogonal_map_is_torchs_parametrization(room, k):
    """The batched map (compact WY form of the Householder product, with torch's trivialization base)
    gives the matrices torch's own ``orthogonal`` parametrization gives, at the start and after a move."""
    starts = [initial_rotation(room, k, seed) for seed in (1, 2, 3)]
    x = torch.stack([p for p, _ in starts]) + 0.3 * torch.randn(3, room, k).tril(-1 if k < room else 0)
    batched = orthonormal(x, torch.stack([b for _, b in starts]))
    for i, seed in enumerate((1, 2, 3)):
        torch.manual_seed(seed)
        reference = orthogonal(nn.Linear(k, room, bias=False))
        with torch.no_grad():
            reference.parametrizations.weight.original.copy_(x[i])
        assert torch.allclose(batched[i], reference.weight, atol=1e-5)
        assert torch.allclose(batched[i].T @ batched[i], torch.eye(k), atol=1e-5)


def _train_one_cell(backbone, bank, layer, cell, epochs, batch_size):
    """A plain per-cell DAS written independently of the library's batched one: torch's orthogonal
    parametrization, its own Adam and batch order, one cell at a time (the reference)."""
    torch.manual_seed(cell.seed)
    rotation = orthogonal(nn.Linear(cell.k, 16, bias=False))
    optimizer = torch.optim.Adam(rotation.parameters(), lr=cell.lr)
    generator = torch.Generator().manual_seed(cell.seed)
    h_base, h_source, labels = bank.acts("base", layer), bank.acts("source", layer), bank.labels(cell.variable)
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            q = rotation.weight
            patched = h_base[idx] + ((h_source[idx] - h_base[idx]) @ q) @ q.T
            loss = bank.task.readout.loss(backbone.resume(layer, patched), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return rotation.weight.detach()


def test_batched_das_equals_training_each_cell_alone(mlp, cached_bank):
    """A location's whole grid trained in stacked forwards gives each cell the subspace it gets alone."""
    cells = [Cell(v, k, lr, seed=10 * i + 1) for i, (v, k, lr) in
             enumerate((v, k, lr) for v in ("WX", "YZ") for k in (1, 3, 16) for lr in (0.01, 0.003))]
    together = train_rotations(mlp, cached_bank, "h1", cells, epochs=2, batch_size=64)
    for cell, q in zip(cells, together):
        alone = _train_one_cell(mlp, cached_bank, "h1", cell, epochs=2, batch_size=64)
        # float32 rounding, which Adam's normalized steps amplify, leaves up to ~3e-4 after these 14 steps
        # (in float64 the two agree to 1e-12); a cell trained on another's batches, labels or learning
        # rate differs by orders of magnitude more
        assert torch.allclose(q @ q.T, alone @ alone.T, atol=2e-3), cell
    # chunks of cells (what a small max_rows forces) are independent trainings: the same subspaces
    chunked = train_rotations(mlp, cached_bank, "h1", cells, epochs=2, batch_size=64, max_rows=128)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(together, chunked))
    # and the stacked evaluation scores each cell as evaluating it alone does
    scores = evaluate_rotations(mlp, cached_bank, "h1", [c.variable for c in cells], together)
    assert scores == [evaluate_rotation(mlp, cached_bank, "h1", c.variable, q) for c, q in zip(cells, together)]


def test_das_training_is_seeded_orthonormal_and_learns(mlp, cached_bank):
    cell = Cell("WX", 4, 0.01, seed=5)
    a, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=3, batch_size=64)
    b, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=3, batch_size=64)
    assert torch.equal(a, b)
    assert torch.allclose(a.T @ a, torch.eye(4), atol=1e-5)
    trained, = train_rotations(mlp, cached_bank, "h1", [Cell("WX", 8, 0.01, seed=0)], epochs=30, batch_size=64)
    assert evaluate_rotation(mlp, cached_bank, "h1", "WX", trained)["combined"] > 0.75  # a random 8-dim subspace sits near 0.5 here


def test_das_within_support_stays_inside_it():
    within = torch.eye(16)[:, [1, 3, 5, 7]]
    q = random_subspace(16, 2, seed=0, within=within)
    outside = [i for i in range(16) if i not in (1, 3, 5, 7)]
    assert torch.allclose(q[outside], torch.zeros(len(outside), 2))
    assert torch.allclose(q.T @ q, torch.eye(2), atol=1e-5)


def test_iia_hand_case():
    pred = torch.tensor([1, 0, 1, 1, 0, 0])
    cf = torch.tensor([1, 1, 1, 0, 0, 0])
    sens = torch.tensor([True, True, True, False, False, False])
    out = iia(pred, cf, sens)
    assert out["sensitive"] == pytest.approx(2 / 3) and out["invariant"] == pytest.approx(2 / 3)
    assert out["combined"] == pytest.approx(2 / 3) and out["n_sensitive"] == 3 and out["n_invariant"] == 3
    only_sensitive = iia(pred[:3], cf[:3], sens[:3])
    assert only_sensitive["combined"] == only_sensitive["sensitive"]


def test_batched_handle_evaluation_equals_one_handle_at_a_time(mlp, cached_bank):
    from plotlib.handles import evaluate_handles

    widths = {"h1": 16, "h2": 16, "h3": 16}
    handles = [
        Handle((Site.parse("h1/coords[0:4]"), Site.parse("h1/coords[2]")), (0.7, 0.3), 2.0),  # overlapping supports
        Handle((Site.parse("h2/all"),), (1.0,), 0.5),
        Handle((Site.parse("h1/coords[3]"), Site.parse("h3/coords[5]")), (0.5, 0.5), 1.0),  # two layers: hooked path
        Handle((Site.parse("h1/coords[7]"),), (1.0,), 4.0),
    ]
    batched = evaluate_handles(mlp, cached_bank, handles, "WX", widths)
    for handle, scores in zip(handles, batched):
        alone = evaluate_handle(mlp, cached_bank, handle, "WX", widths)
        assert scores == pytest.approx(alone)


def test_boundless_das_with_its_mask_forced_open_equals_das_at_full_dimension(mlp, cached_bank):
    """With the boundary at 1 and a cold temperature, every direction of the rotation is swapped: the
    Boundless intervention is DAS's at k = room, which is the full interchange."""
    q = random_subspace(16, 16, seed=3)
    weights = boundary_weights(torch.tensor(1.0), 16, temperature=0.01)
    assert torch.allclose(weights, torch.ones(16))
    h, source = cached_bank.acts("base", "h1"), cached_bank.acts("source", "h1")
    soft = interchange(h, source, Subspace(basis=q, weights=weights).project)
    assert torch.allclose(soft, interchange(h, source, Subspace(basis=q).project), atol=1e-5)
    assert torch.allclose(soft, source, atol=1e-5)
    assert boundary_size(1.0, 16) == 16 and boundary_size(0.2, 16) == 3 and boundary_size(0.0, 16) == 1


def test_dbm_with_an_all_ones_mask_is_a_full_interchange(cached_bank):
    h, source = cached_bank.acts("base", "h1"), cached_bank.acts("source", "h1")
    units = Subspace(basis=torch.eye(16), weights=torch.sigmoid(torch.full((16,), 20.0) / 0.1))
    assert torch.allclose(interchange(h, source, units.project), source, atol=1e-6)
    assert kept_units(torch.tensor([-1.0, 2.0, 0.5, -3.0])).tolist() == [1, 2]
    assert kept_units(torch.tensor([-1.0, -0.2, -3.0])).tolist() == [1]  # none positive: the strongest one


def test_dbm_learns_a_set_of_native_units_seeded(mlp, cached_bank):
    schedule = MaskSchedule(penalty=0.1, start=5.0, end=0.1)
    cell = Cell("WX", 16, 0.05, seed=3, mask="units")
    a, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=10, batch_size=64, schedule=schedule)
    b, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=10, batch_size=64, schedule=schedule)
    assert torch.equal(a, b) and 1 <= a.shape[1] <= 16
    assert set(a.flatten().tolist()) <= {0.0, 1.0} and (a.sum(0) == 1).all()  # columns are native unit vectors


def test_boundless_das_learns_its_size_seeded_and_alone_as_beside_das_cells(mlp, cached_bank):
    boundless = MaskSchedule(penalty=0.1, start=5.0, end=0.1)
    cell = Cell("WX", 16, 0.01, seed=7, mask="boundary")
    a, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=10, batch_size=64, schedule=boundless)
    b, = train_rotations(mlp, cached_bank, "h1", [cell], epochs=10, batch_size=64, schedule=boundless)
    assert torch.equal(a, b) and 1 <= a.shape[1] < 16  # the penalty shrank the boundary from its start, 8 of 16
    assert torch.allclose(a.T @ a, torch.eye(a.shape[1]), atol=1e-5)
    beside = train_rotations(mlp, cached_bank, "h1", [Cell("YZ", 4, 0.01, seed=1), cell], epochs=10, batch_size=64,
                             schedule=boundless)[1]
    assert beside.shape == a.shape and torch.allclose(beside @ beside.T, a @ a.T, atol=2e-3)
    assert evaluate_rotation(mlp, cached_bank, "h1", "WX", a)["combined"] > 0.75


def test_forwards_limited_to_a_few_rows_give_the_same_logits(mlp, cached_bank):
    """Sweeps split the bases when they exceed one forward's rows, and a handle's evaluation runs its bank
    in row chunks: the results equal one forward over every row."""
    loc = cached_bank.task.coarse_locations(mlp)[1]
    subs = [site_subspace(Site(loc, Support("coords", (i,))), 16) for i in range(5)]
    base, source = cached_bank.acts("base", loc.id), cached_bank.acts("source", loc.id)
    whole = sweep_single_sites(mlp, loc.id, base, source, subs)
    torch.testing.assert_close(sweep_single_sites(mlp, loc.id, base, source, subs, max_rows=64), whole)
    handle = Handle((Site(loc, Support("coords", (0, 3))),), (1.0,), 1.5)
    once = evaluate_handle(mlp, cached_bank, handle, "WX", {loc.id: 16})
    mlp.max_batch_rows = 64
    try:
        assert evaluate_handle(mlp, cached_bank, handle, "WX", {loc.id: 16}) == once
    finally:
        del mlp.max_batch_rows
