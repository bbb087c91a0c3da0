"""Multiple-choice QA: the causal model and its families, token positions, and the whole pipeline on
tiny random GPT-2 and Llama models saved to disk and loaded through the pretrained-model path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from plotlib import pipeline
from plotlib.banks import bank_inputs, make_bank
from plotlib.cache import cache_bytes
from plotlib.config import load_yaml, resolve_benchmark
from plotlib.io import write_json
from plotlib.lm import CausalLMBackbone, load_lm_backbone
from plotlib.tasks import make_task
from plotlib.tasks.mcqa import FAMILIES, MCQA
from plotlib.tasks.prompted import word_tokenizer
from workflow_runs import ROOT, run_stages

BASE = {"object": "lemon", "color": "gold", "facts": "lemon=gold", "order": "0",
        "choice0": "red", "choice1": "gold", "choice2": "blue", "choice3": "pink",
        "letter0": "B", "letter1": "D", "letter2": "F", "letter3": "H"}


@pytest.fixture(scope="module")
def task():
    return make_task("mcqa", {"n_facts": 1}, 0, {"kind": "transformer", "layers": 2, "width": 16, "heads": 2})


def test_causal_model_answers_and_counterfactuals_on_a_hand_case(task):
    model = task.causal_model
    assert model.run(BASE)["answer_pointer"] == 1 and model.run(BASE)["O"] == "D"
    moved = {**BASE, "choice1": "blue", "choice2": "gold"}  # the correct color moved to slot 2
    relettered = {**BASE, "letter0": "A", "letter1": "C", "letter2": "E", "letter3": "G"}
    # answer_pointer from a source: the base's letter at the source's slot
    assert model.interchange(BASE, moved, "answer_pointer") == "F"
    assert model.interchange(BASE, relettered, "answer_pointer") == "D"  # same slot: invariant
    # answer_token from a source: the source's letter itself
    assert model.interchange(BASE, relettered, "answer_token") == "C"
    assert model.interchange(BASE, moved, "answer_token") == "F"
    frame = pd.DataFrame([BASE, moved, relettered])
    assert task.outputs(frame).tolist() == [task.letters.index(x) for x in "DFC"]


def test_families_change_what_they_say(task):
    base, source, families = task.sample_pairs(np.random.default_rng(0), 90)
    assert sorted(set(families)) == sorted(FAMILIES)
    k = task.n_choices
    for (_, b), (_, s), family in zip(base.iterrows(), source.iterrows(), families):
        colors_b, colors_s = [b[f"choice{i}"] for i in range(k)], [s[f"choice{i}"] for i in range(k)]
        letters_b, letters_s = [b[f"letter{i}"] for i in range(k)], [s[f"letter{i}"] for i in range(k)]
        assert sorted(colors_b) == sorted(colors_s) and b["facts"] == s["facts"]
        moved = colors_b.index(b["color"]) != colors_s.index(s["color"])
        assert moved == (family in ("answerPosition", "both", "sameLetter"))
        assert (letters_b != letters_s) == (family in ("randomLetter", "both", "sameLetter"))
        if family == "sameLetter":  # the answer moves with its letter
            assert letters_s[colors_s.index(s["color"])] == letters_b[colors_b.index(b["color"])]
            assert letters_s == sorted(letters_s)
    bank = make_bank(task, 60, 0, "fit")
    assert (bank[~bank.sensitive_answer_pointer].family == "randomLetter").all()
    assert set(bank[~bank.sensitive_answer_token].family) <= {"sameLetter", "both"}


def test_named_positions_point_at_their_tokens(task):
    x = task.encode(pd.DataFrame([BASE, {**BASE, "choice1": "blue", "choice2": "gold"}]))
    tokens = [task.tokenizer.convert_ids_to_tokens(row) for row in x.input_ids.tolist()]
    for row, (letter, color) in enumerate([("D", "gold"), ("F", "gold")]):
        assert tokens[row][x.positions["letter"][row]] == letter
        assert tokens[row][x.positions["color"][row]] == color
        assert tokens[row][x.positions["last"][row]] == ":"
    # the span of every choice's color, in slot order
    assert [tokens[1][t] for t in x.positions["choices"][1]] == ["red", "blue", "gold", "pink"]
    assert [task.tokenizer.convert_ids_to_tokens(i) for i in task.answer_token_ids] == list(task.letters)


def _tiny_model(arch: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                          bos_token_id=2, eos_token_id=2))
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))


def _saved_model(directory: Path, arch: str = "llama") -> Path:
    """A tiny random model and the task's tokenizer, saved like a downloaded model."""
    tokenizer = word_tokenizer(MCQA({}, 0).words())
    _tiny_model(arch, len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _pretrained_run(tmp_path, raw: dict) -> tuple[dict, pipeline.Run]:
    """``raw`` (a pretrained spec) written, resolved at its tiny scale, and a run of it in ``tmp_path``."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    spec = resolve_benchmark(tmp_path / "spec.yaml", "tiny", load_yaml(ROOT / "workflow" / "schemas" / "benchmark.schema.yaml"))
    write_json({"name": "mcqa_pretrained", "scale": "tiny", "spec": spec}, tmp_path / "spec.json")
    return spec, pipeline.Run(str(tmp_path / "spec.json"), 0, str(tmp_path / "run"))


def _run_pipeline(tmp_path, spec_changes: dict, sections: dict | None = None) -> pipeline.Run:
    """Every stage of one run, in process, on the tiny scale of benchmarks/mcqa_pretrained.yaml
    (``sections``: whole spec sections replaced)."""
    raw = load_yaml(ROOT / "benchmarks" / "mcqa_pretrained.yaml")
    raw["backbone"].update(spec_changes)
    raw.update(sections or {})
    raw["training"]["below_floor"] = "exclude"  # a random model is at chance: benchmark it anyway
    spec_file = tmp_path / "mcqa_pretrained.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    run = run_stages(spec_file, tmp_path, refine=(("pca", "PLOT-PCA"), ("native", "PLOT-native")))
    pipeline.stage_guided_das(run, "PLOT-PCA-DAS")
    return run


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_pretrained_pipeline_runs_through_the_loading_code(tmp_path, arch):
    """A random model saved with save_pretrained is loaded by path like a hub model and benchmarked; the
    Llama run stores its cache in bfloat16 and runs forwards of a few rows (the large-model settings)."""
    model_dir = _saved_model(tmp_path / arch, arch)
    small = {"cache": {"dtype": "bfloat16"}, "batching": {"rows": 7, "das_rows": 40, "cache_prompts": 5}}
    plain = {"cache": {"dtype": "float32"}, "batching": {}}
    run = _run_pipeline(tmp_path, {"pretrained": str(model_dir)}, small if arch == "llama" else plain)
    stored = torch.bfloat16 if arch == "llama" else torch.float32
    test = run.bank("test")
    assert test.x_base.streams["L1"].dtype == stored and test.acts("base", "L1@last").dtype == torch.float32
    assert run.backbone.max_batch_rows == (7 if arch == "llama" else CausalLMBackbone.max_batch_rows)
    # (emb, L1, L2) x (last, color, choices); the span of 4 choices is 4 x 32 wide
    assert isinstance(run.backbone, CausalLMBackbone) and len(run.locations) == 3 * 3 and run.widths["L1@choices"] == 128
    assert json.loads((tmp_path / "run" / "backbone" / "metrics.json").read_text())["checkpoint"] == str(model_dir)
    for method in ("PLOT", "Full DAS", "PLOT-DAS", "PLOT-PCA", "PLOT-native", "PLOT-PCA-DAS"):
        acc = pd.read_parquet(run.paths.accuracy(method))
        combined = acc[acc.metric == "combined"]
        assert set(combined.variable) == {"answer_pointer", "answer_token"} and combined.value.between(0, 1).all()
    full = pd.read_parquet(run.paths.accuracy("Full DAS"))
    assert set(full.sites.str.split("/").str[0]) <= {loc.id for loc in run.locations}
    # the record written for a pretrained model points at it; loading it gives the same readout
    again = load_lm_backbone(run.paths.model)
    x = run.bank("test").x_base
    assert torch.allclose(again(x), run.backbone(x), atol=1e-5)


def test_a_pretrained_model_below_the_floor_stops_the_run_keeping_its_metrics(tmp_path):
    """A random model is at chance: the train stage says so and stops (no later stage would mean anything),
    after writing the backbone's metrics; the CLI turns it into a one-line error."""
    from plotlib.cli import main
    from plotlib.training import BelowAccuracyFloor

    raw = load_yaml(ROOT / "benchmarks" / "mcqa_pretrained.yaml")
    raw["backbone"]["pretrained"] = str(_saved_model(tmp_path / "random_llama"))
    spec, run = _pretrained_run(tmp_path, raw)
    assert spec["training"]["below_floor"] == "stop"
    with pytest.raises(BelowAccuracyFloor, match=r"below training.min_accuracy 0.5 as built .*training.below_floor: exclude"):
        pipeline.stage_train(run)
    metrics = json.loads(Path(run.paths.train_metrics).read_text())
    assert metrics["factual_accuracy"] < 0.5 and 0 < metrics["chance"] < 1 and "excluded" not in metrics
    code = main(["train", "--spec", str(tmp_path / "spec.json"), "--seed", "0", "--run-dir", str(tmp_path / "again")])
    assert code == 2


def test_a_cache_over_its_budget_stops_before_it_is_written(tmp_path):
    raw = load_yaml(ROOT / "benchmarks" / "mcqa_pretrained.yaml")
    raw["backbone"]["pretrained"] = str(_saved_model(tmp_path / "llama"))
    raw["training"]["below_floor"] = "exclude"
    raw["cache"] = {"budget_gb": 1e-4}  # 100 kB
    _, run = _pretrained_run(tmp_path, raw)
    pipeline.stage_train(run)
    pipeline.stage_banks(run)
    bank = pd.read_parquet(run.paths.bank("fit"))
    x = run.task.encode(bank_inputs(bank, "base"))
    # the estimate is the bytes the cache holds: both roles at every location, the bases' streams of 3 layers
    expected = 4 * (2 * len(bank) * sum(run.widths.values()) + len(bank) * x.input_ids.shape[1] * 32 * 3)
    assert cache_bytes(len(bank), run.locations, run.widths, x.input_ids.shape[1], 32) == expected
    with pytest.raises(MemoryError, match=r"fit bank's activation cache would take .* over cache.budget_gb = 0.0001"):
        pipeline.stage_cache(run, ["fit"])
    assert not Path(run.paths.cache("fit")).exists()


def test_trained_transformer_is_saved_beside_its_tokenizer_and_reloads(tmp_path):
    task = make_task("mcqa", {"n_facts": 1}, 0, {"kind": "transformer", "layers": 2, "width": 16, "heads": 2})
    model = task.build_backbone(task.backbone_options, 0).eval()
    path = tmp_path / "model.pt"
    task.save_backbone(model, str(path))
    assert (tmp_path / "model.pt.hf" / "model.safetensors").exists() and (tmp_path / "model.pt.hf" / "tokenizer.json").exists()
    x = task.encode(task.sample_inputs(np.random.default_rng(1), 8))
    assert torch.allclose(task.load_backbone(str(path))(x), model(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_init_std_sets_the_spread_of_the_initial_weights(arch):
    task = make_task("mcqa", {"n_facts": 1}, 0, {"kind": "transformer"})
    spread = {}
    for std in (0.02, 0.1):
        model = task.build_backbone({"architecture": arch, "layers": 1, "width": 64, "heads": 2, "init_std": std}, 0)
        matrices = [p for name, p in model.named_parameters() if name.endswith(("c_fc.weight", "up_proj.weight"))]
        spread[std] = torch.cat([p.detach().flatten() for p in matrices]).std().item()
    assert spread[0.02] == pytest.approx(0.02, rel=0.1) and spread[0.1] == pytest.approx(0.1, rel=0.1)


def test_warmup_schedule_rises_linearly_then_follows_the_cosine():
    from plotlib.training import learning_rate_schedule

    def rates(steps, warmup):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = learning_rate_schedule(optimizer, steps, warmup)
        out = []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return np.array(out)

    warm = rates(100, 10)
    cosine = 0.5 * (1 + np.cos(np.pi * np.arange(100) / 100))
    assert warm[:10] == pytest.approx(np.arange(1, 11) / 10 * cosine[:10])  # rises from lr / 10
    assert warm[10:] == pytest.approx(cosine[10:]) and warm[-1] < 1e-3
    assert rates(100, 0) == pytest.approx(cosine)  # no warmup: plain cosine annealing


def test_bad_model_paths_are_named(tmp_path):
    task = make_task("mcqa", {}, 0, {"kind": "pretrained", "pretrained": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError, match="missing"):
        task.build_backbone(task.backbone_options, 0)


def test_tiny_snakemake_run_fans_full_das_over_layer_token_sites(tmp_path):
    """The real workflow on the tiny MCQA config: one Full DAS job per (layer, token) site, every
    method's table, and the layer x token heatmap in the report."""
    from workflow_runs import snakemake

    methods = ["PLOT", "PLOT-native", "PLOT-PCA", "brute-force", "Full DAS", "PLOT-DAS", "PLOT-native-DAS", "PLOT-PCA-DAS",
               "brute-force-DAS", "random-DAS"]  # the learned-size baselines' fan-out is the same as Full DAS's
    config = {"output_dir": "results", "scale": "tiny", "seeds": [0], "benchmarks": ["mcqa"], "methods": methods}
    result = snakemake(tmp_path, config=config)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results"
    sites = [f"{layer}@{pos}" for layer in ("emb", "L1", "L2") for pos in ("last", "choices")]  # tiny: 2 layers, 2 positions
    for site in sites:
        assert (out / f"mcqa/seed0/das/full_das/{site}.parquet").exists()
        assert (out / f"mcqa/seed0/runtime/das_full_das_{site}.parquet").exists()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.method) == set(methods)
    assert (out / "figures/mcqa_layer_token_seed0.png").stat().st_size > 5000
    assert "mcqa_layer_token_seed0.png" in (out / "report.md").read_text()
    stage_a = json.loads((out / "mcqa/seed0/handles/plot.json").read_text())
    assert all(h["handle"]["sites"][0].split("/")[0] in sites for h in stage_a.values())


def test_suffix_patching_script_agrees_with_full_forward_at_every_site():
    """benchmarks/suffix_patching.py on a tiny model: it checks suffix-only and prefix reuse against the
    hooked full forward at each (layer, position) site, spans included, and reports one row per site."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("suffix_patching", ROOT / "benchmarks" / "suffix_patching.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.measure(depth=1, width=16, pairs=6, repeats=1, seed=0)
    assert [r["site"] for r in rows] == [f"{layer}@{pos}" for layer in ("emb", "L1") for pos in ("last", "letter", "color", "choices")]
    assert all(r[key] > 0 for r in rows for key in ("full_s", "suffix_s", "prefix_s", "step_suffix_s", "step_prefix_s"))


def test_plan_extrapolates_measured_per_layer_costs(capsys):
    """The planning arithmetic on hand-set costs, and the command end to end on the tiny MCQA spec."""
    from plotlib.cli import main
    from plotlib.plan import Costs, estimate

    spec = resolve_benchmark(ROOT / "benchmarks" / "mcqa.yaml", "tiny", load_yaml(ROOT / "workflow" / "schemas" / "benchmark.schema.yaml"))
    positions, spans = ("last", "choices"), {"choices": 4}
    costs = Costs(16, layer={"last": 1.0, "choices": 3.0}, layer_step={"last": 2.0, "choices": 5.0},
                  head={"last": 0.5, "choices": 0.5}, tokens=10)
    row = estimate(spec, positions, spans, 2, 2, costs)
    # tiny DAS grid: dims [1, 16] (the 16-wide "last" site keeps both, so does the 64-wide span), lr 0.01, 1 epoch
    n_das, n_cal = spec["banks"]["das_train"], spec["banks"]["calibration"]
    per_location = [2 * (n_das * (after * step + 0.5) + n_cal * (after * fwd + 0.5))
                    for after in (2, 1, 0) for fwd, step in ((1.0, 2.0), (3.0, 5.0))]
    assert row["coarse sites"] == 6 and row["Full DAS s"] == pytest.approx(2 * sum(per_location))
    assert row["cache GB"] * 1e9 == pytest.approx(sum(4 * (2 * n * 3 * (16 + 64) + n * 10 * 16 * 3) for n in spec["banks"].values()))
    assert main(["plan", "mcqa", "--scale", "tiny", "--widths", "16", "--depths", "2", "4", "--rows", "4"]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("|") and line[1:].strip()[0].isdigit()]
    assert [line.split("|")[1].strip() for line in lines] == ["2", "4"]
    full = [float(line.split("|")[6].replace(",", "")) for line in lines]
    assert full[1] > full[0] > 0  # deeper: more sites, more layers after each
