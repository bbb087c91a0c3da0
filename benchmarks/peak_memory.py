"""Peak resident memory of the pretrained-LM MCQA benchmark, two commits side by side, on one spec.

A randomly initialized Gemma-2-shaped model (width 2304, Gemma-2-2B's attention: 8 heads of 256, 4 key-value
heads; fewer layers and a narrower MLP than the real model, so that a CPU runs it in minutes) is saved
locally with a word tokenizer for the task. One spec (written here, using only keys both commits accept)
runs in a git worktree of each commit, `snakemake --cores N` on one seed. Printed per stage (Snakemake's
`benchmark:` records, max_rss of each job): the peak resident memory under each commit, their ratio, and
whether the two runs give the same IIA and the same chosen sites.

    python benchmarks/peak_memory.py --old 95ef71f --new HEAD --out /tmp/peak_memory
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_model(directory: Path, width: int, layers: int, intermediate: int) -> None:
    """A random Gemma-2-shaped causal LM and the task's word tokenizer, saved like a downloaded model."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from plotlib.tasks.mcqa import MCQA
    from plotlib.tasks.prompted import word_tokenizer

    tokenizer = word_tokenizer(MCQA({}, 0).words())
    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                          max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    Gemma2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def spec(model_dir: Path, bank: int, width: int) -> dict:
    """benchmarks/mcqa_pretrained.yaml at a reduced bank size and grid (scaled to ``width``), on the saved model."""
    raw = yaml.safe_load((ROOT / "benchmarks" / "mcqa_pretrained.yaml").read_text())
    for key in ("scales", "cache", "batching", "resources"):  # keys the older commit may not know: their defaults apply
        raw.pop(key, None)
    raw["backbone"].update(pretrained=str(model_dir), device="cpu")
    raw["training"].update(below_floor="exclude", eval_size=64)  # a random model is at chance: benchmark it anyway
    raw["task_options"]["positions"] = ["last", "color", "choices"]
    raw["banks"] = {"fit": bank, "calibration": bank, "test": bank, "das_train": bank}
    raw["methods"] = ["PLOT", "PLOT-native", "Full DAS", "PLOT-DAS"]
    raw["plot"].update(eps=[0.1], beta=[1], gain=[1], alternatives=1)
    raw["refine"].update(native_groups=[width // 3, width // 6], pca_prefixes=[16, 4], pca_bands=[], eps=[0.03], beta=[1],
                         top_k=[1, 2], gain=[1, 2])
    raw["das"].update(dims=[16, min(256, width)], lrs=[0.01], epochs=1, batch_size=8)
    return raw


def run(commit: str, label: str, out: Path, spec_file: Path, cores: int) -> Path:
    """Snakemake on ``spec_file`` in a fresh worktree of ``commit``; returns the results folder."""
    tree, results = out / f"tree_{label}", out / f"results_{label}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True)
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True, check=True).stdout.strip()
    if subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() != sha:
        subprocess.run(["git", "-C", str(tree), "checkout", "--detach", sha], check=True)  # code changed: run again
        shutil.rmtree(results, ignore_errors=True)
    config = out / f"config_{label}.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(results), "benchmarks": [str(spec_file)], "seeds": [0],
                                      "scale": "default", "methods": None, "threads": 1, "train_threads": 1}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", str(config)],
                   cwd=tree, check=True, env=env)
    return results


def peaks(results: Path) -> pd.Series:
    """max_rss (MB) of each job, by job name, from Snakemake's benchmark records."""
    frames = {p.stem: pd.read_csv(p, sep="\t")["max_rss"].max() for p in results.glob("*/seed0/benchmarks/*.tsv")}
    return pd.Series(frames).sort_index()


def outcomes(results: Path) -> pd.DataFrame:
    """Test-bank combined IIA and chosen sites per method and variable."""
    acc = pd.read_parquet(results / "accuracy.parquet")
    acc = acc[(acc.split == "test") & (acc.metric == "combined")]
    return acc.set_index(["method", "variable"])[["value", "sites"]].sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="commit before the change")
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=2304)
    parser.add_argument("--bank", type=int, default=64, help="pairs per bank")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.out / "model"
    if not model_dir.exists():
        build_model(model_dir, args.width, args.layers, args.intermediate)
    spec_file = args.out / "mcqa_wide.yaml"
    spec_file.write_text(yaml.safe_dump(spec(model_dir, args.bank, args.width)))
    old, new = (run(c, label, args.out, spec_file, args.cores) for label, c in (("old", args.old), ("new", args.new)))
    table = pd.DataFrame({"old MB": peaks(old), "new MB": peaks(new)})
    table["new / old"] = table["new MB"] / table["old MB"]
    print(table.round(2).to_markdown())
    print(f"\nlargest job: old {table['old MB'].max():.0f} MB, new {table['new MB'].max():.0f} MB, "
          f"ratio {table['new MB'].max() / table['old MB'].max():.2f}")
    a, b = outcomes(old), outcomes(new)
    same = a.equals(b)
    print("IIA and chosen sites identical:", same)
    if not same:
        print(a.join(b, lsuffix=" old", rsuffix=" new").to_markdown())


if __name__ == "__main__":
    main()
