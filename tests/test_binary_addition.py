"""Binary addition: the causal model on hand cases, the stratified banks, the GRU's suffix-only resume,
Stage B site grids, PCA spans and support-restricted DAS."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from plotlib.banks import make_bank
from plotlib.cache import CachedBank, build_cache, capture
from plotlib.das import dimension_hint, random_subspace
from plotlib.patching import Edit, Subspace, run_with_edits, site_subspace
from plotlib.refine import native_group_sites, pca_basis, pca_span_sites, support_basis
from plotlib.sites import Location, Site
from plotlib.tasks import make_task
from plotlib.tasks.binary_addition import longest_run, stratified_split
from plotlib.training import train_backbone

SIZES = {"fit": 128, "calibration": 64, "test": 64, "das_train": 128}


@pytest.fixture(scope="module")
def adder():
    return make_task("binary_addition", {"n_bits": 4, "carry_sources": 3}, 0)


def inputs(task, a: int, b: int) -> pd.DataFrame:
    return task._from_ints(np.array([a]), np.array([b]))


@pytest.mark.parametrize("a,b,carries", [(0, 0, [0, 0, 0, 0]), (1, 1, [1, 0, 0, 0]), (15, 1, [1, 1, 1, 1]),
                                         (5, 3, [1, 1, 1, 0]), (8, 8, [0, 0, 0, 1]), (6, 3, [0, 1, 1, 0])])
def test_carries_and_sum_on_hand_cases(adder, a, b, carries):
    values = adder.values(inputs(adder, a, b))
    assert [int(values[f"C{i}"][0]) for i in range(1, 5)] == carries
    assert int(adder.outputs(inputs(adder, a, b))[0]) == a + b  # bits S0..S3 then C4: the 5-bit sum


def test_counterfactuals_on_hand_cases(adder):
    model = adder.causal_model
    row = lambda a, b: inputs(adder, a, b).iloc[0].to_dict()  # noqa: E731
    # 1 + 0 = 1; forcing C1 = 1 (from 1 + 1) adds a carry into bit 1: S1 = 1, output 0b00011 = 3
    assert model.interchange(row(1, 0), row(1, 1), "C1") == 3
    # 7 + 1 = 8 (carries 1,1,1,0); forcing C2 = 0 (from 0 + 0) stops the chain: S2 = 1, C3 = 0, so 0b00100 = 4
    assert model.interchange(row(7, 1), row(0, 0), "C2") == 4
    # a source with the same C3 changes nothing
    assert model.interchange(row(7, 1), row(4, 4), "C3") == 8


def test_split_is_stratified_disjoint_and_complete(adder):
    parts = adder.base_split(SIZES)
    fit, cal, test = (set(parts[s].tolist()) for s in ("fit", "calibration", "test"))
    assert (len(fit), len(cal), len(test)) == (128, 64, 64)
    assert not (fit & cal or fit & test or cal & test) and len(fit | cal | test) == 256
    assert set(parts["das_train"].tolist()) <= fit
    strata = longest_run(adder._table[0])
    counts = {s: np.bincount(strata[parts[s]], minlength=5) for s in ("fit", "calibration", "test")}
    overall = np.bincount(strata, minlength=5)
    assert (np.abs(counts["fit"] - overall / 2) <= 1).all()
    assert (np.abs(counts["calibration"] - overall / 4) <= 1).all() and (np.abs(counts["test"] - overall / 4) <= 1).all()


def test_stratified_split_rejects_oversized_requests():
    with pytest.raises(ValueError, match="need 12 items"):
        stratified_split(np.zeros(10, dtype=int), {"a": 6, "b": 6}, np.random.default_rng(0))


def test_bank_families_and_carry_targeted_sources(adder):
    bank = make_bank(adder, SIZES, 0, "calibration")
    assert len(bank) == 64 * (8 + 3 * 3)
    assert set(bank.family) == {f"flip_{c}{t}" for c in "AB" for t in range(4)} | {"carry_C1", "carry_C2", "carry_C3"}
    carry = bank[bank.family == "carry_C2"]
    assert carry.sensitive_C2.all()  # a flipped carry always changes its sum bit
    flips = bank[bank.family == "flip_A3"]
    assert not flips.sensitive_C1.any() and not flips.sensitive_C3.any()  # bit 3 comes after C1..C3
    differ = (bank[[f"base_{c}" for c in adder.input_names]].to_numpy() != bank[[f"source_{c}" for c in adder.input_names]].to_numpy())
    assert (differ[bank.family.str.startswith("flip").to_numpy()].sum(1) == 1).all()


@pytest.fixture(scope="module")
def gru_bank(adder, tmp_path_factory):
    training = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 256, "steps": 400, "eval_every": 10_000,
                "eval_size": 256, "min_accuracy": 0.0}
    model, _ = train_backbone(adder, {"backbone": {"hidden": [16]}, "training": training}, 0)
    bank = make_bank(adder, SIZES, 0, "test")
    path = tmp_path_factory.mktemp("gru") / "test.safetensors"
    build_cache(adder, model, bank, adder.coarse_locations(model), path)
    return model, CachedBank(adder, bank, path)


def test_gru_resume_from_each_timestep_equals_the_full_forward(gru_bank):
    model, bank = gru_bank
    acts = capture(model, bank.x_base, list(model.taps))
    for layer in model.taps:
        assert torch.allclose(model.resume(layer, acts[layer], bank.x_base), acts["logits"], atol=1e-6)


def test_gru_patch_by_resume_equals_the_hooked_full_forward(gru_bank):
    model, bank = gru_bank
    for layer in ("h0", "h2"):
        edit = Edit(Location(layer), Subspace(mask=(torch.arange(16) < 5).float()), 1.0, bank.acts("source", layer))
        resumed = run_with_edits(model, bank.x_base, [edit], bank.base_acts([layer]))
        hooked = run_with_edits(model, bank.x_base, [edit])
        assert torch.allclose(resumed, hooked, atol=1e-6)


def test_stage_b_site_grids():
    loc = Location("h1")
    native = native_group_sites(loc, 16, [16, 8, 4, 2, 1])
    assert len(native) == 1 + 2 + 4 + 8 + 16 and len(set(native)) == len(native)
    assert native[0].id == "h1/coords[0:16]" and native[-1].id == "h1/coords[15]"
    pca = pca_span_sites(loc, 16, [16, 8, 4, 2, 1], bands=[4])
    assert [s.id for s in pca[:5]] == ["h1/basis[0:16]", "h1/basis[0:8]", "h1/basis[0:4]", "h1/basis[0:2]", "h1/basis[0]"]
    assert [s.id for s in pca[5:]] == ["h1/basis[4:8]", "h1/basis[8:12]", "h1/basis[12:16]"]  # basis[0:4] is already there
    assert all(Site.parse(s.id) == s for s in native + pca)
    with pytest.raises(ValueError, match="1..16"):
        native_group_sites(loc, 16, [32])


def test_pca_interchange_over_all_components_equals_the_native_full_interchange(gru_bank):
    model, bank = gru_bank
    layer = "h1"
    basis = pca_basis(torch.cat([bank.acts("base", layer), bank.acts("source", layer)]))
    assert torch.allclose(basis.T @ basis, torch.eye(16), atol=1e-5)
    loc = Location(layer)
    full_pca = site_subspace(Site.parse("h1/basis[0:16]"), 16, basis)
    native = site_subspace(Site(loc), 16)
    source = bank.acts("source", layer)
    out = [run_with_edits(model, bank.x_base, [Edit(loc, sub, 1.0, source)], bank.base_acts([layer])) for sub in (full_pca, native)]
    assert torch.allclose(out[0], out[1], atol=1e-5)
    # and a leading span really is a projection onto fewer directions
    prefix = site_subspace(Site.parse("h1/basis[0:2]"), 16, basis)
    delta = source - bank.acts("base", layer)
    assert torch.linalg.matrix_rank(prefix.project(delta)) <= 2


def test_support_restricted_rotation_stays_inside_its_support():
    coords = support_basis([Site.parse("h0/coords[2:6]"), Site.parse("h0/coords[4:8]")], 16)
    assert coords.shape == (16, 6) and torch.equal(coords.sum(1).nonzero().flatten(), torch.arange(2, 8))
    q = random_subspace(16, 3, seed=0, within=coords)
    assert torch.allclose(q.T @ q, torch.eye(3), atol=1e-5)
    assert torch.allclose(q[:2], torch.zeros(2, 3)) and torch.allclose(q[8:], torch.zeros(8, 3))
    with pytest.raises(ValueError, match="1..6"):
        random_subspace(16, 7, seed=0, within=coords)


def test_mass_support_keeps_the_fewest_dimensions_holding_the_mass():
    from plotlib.refine import mass_support

    sites = [Site.parse(s) for s in ("h0/coords[0:16]", "h0/coords[0:8]", "h0/coords[8:16]", "h0/coords[3]", "h0/coords[9]")]
    pi = np.array([0.1, 0.1, 0.1, 0.5, 0.2])
    # per coordinate: 3 holds 0.5 + 0.1/8 + 0.1/16, 9 holds 0.2 + 0.1/8 + 0.1/16, the others 0.1/8 + 0.1/16 or 0.1/16
    assert mass_support(pi, sites, 0.5, 16).id == "h0/coords[3]"
    assert mass_support(pi, sites, 0.7, 16).id == "h0/coords[3,9]"
    assert mass_support(pi, sites, 0.8, 16).id == "h0/coords[0,1,2,3,4,9]"  # then the rest, lowest index first
    assert mass_support(pi, sites, 1.0, 16).id == "h0/coords[0:16]"
    pca = [Site.parse("h0/basis[0:4]"), Site.parse("h0/basis[2]")]
    assert mass_support(np.array([0.4, 0.6]), pca, 0.7, 16).id == "h0/basis[2]"  # basis components stay components
    with pytest.raises(ValueError, match="one location"):
        mass_support(np.array([0.5, 0.5]), [Site.parse("h0/coords[1]"), Site.parse("h1/coords[1]")], 0.5, 16)


def test_dimension_hint_scales_the_support_size():
    assert dimension_hint(4, [0.5, 1, 1.5]) == [2, 4]  # 6 is capped at the support's 4
    assert dimension_hint(1, [0.5, 1, 1.5]) == [1]


def test_inert_sites_are_told_apart_from_float_noise():
    from plotlib.signatures import active_rows

    effects = torch.zeros(3, 10, 5)
    effects[0] = 0.3
    effects[1] = 1e-9  # what a direction outside the data's span gives: rounding noise
    assert active_rows(effects).tolist() == [True, False, False]
