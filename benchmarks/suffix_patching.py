"""Suffix-only patching versus a plain full forward per intervention, measured in one run.

For every coarse site (residual stream after a layer, at a token position) of an MCQA transformer, the
same batch of interchange interventions is run two ways:
  suffix: write the source vector into the base's cached residual stream and run only the later layers
          (what every plotlib stage does);
  full:   run the whole model on the base prompts with a hook that writes the vector at that layer.
Outputs are checked to agree; the ratio full / suffix is printed per depth and site.

    python benchmarks/suffix_patching.py --layers 4 8 12 --pairs 256 --repeats 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from plotlib.cache import capture_locations
from plotlib.lm import CausalLMBackbone, _hidden_states, _output, _with_hidden_states, write_position
from plotlib.tasks import make_task


def full_forward_with_patch(backbone: CausalLMBackbone, layer: str, position: str, h: torch.Tensor, x) -> torch.Tensor:
    """The readout of a complete forward pass in which a hook writes ``h`` into the stream at ``layer``
    (at one token, or a span of tokens)."""
    index = backbone.layer_names.index(layer)

    def write(stream: torch.Tensor) -> torch.Tensor:
        return write_position(stream, x.positions[position], h)

    if index == 0:
        hook = backbone.layers[0].register_forward_pre_hook(
            lambda _, args, kwargs: _with_hidden_states(args, kwargs, write(_hidden_states(args, kwargs))), with_kwargs=True)
    else:
        hook = backbone.layers[index - 1].register_forward_hook(lambda _, __, out: write(_output(out)))
    try:
        return backbone(x)
    finally:
        hook.remove()


def seconds(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def measure(depth: int, width: int, pairs: int, repeats: int, seed: int) -> list[dict]:
    options = {"kind": "transformer", "layers": depth, "width": width, "heads": 4, "architecture": "llama"}
    task = make_task("mcqa", {"n_facts": 1}, seed, options)
    backbone = task.build_backbone(options, seed).eval()
    rng = np.random.default_rng(seed)
    base, source, _ = task.sample_pairs(rng, pairs)
    xb, xs = task.encode(base), task.encode(source)
    locations = task.coarse_locations(backbone)
    _, streams = capture_locations(backbone, xb, locations)
    source_acts, _ = capture_locations(backbone, xs, locations)
    xb = xb.with_streams(streams)
    rows = []
    for loc in locations:
        h = source_acts[loc.id]
        suffix = backbone.resume(loc.id, h, xb)
        full = full_forward_with_patch(backbone, loc.layer, loc.position, h, xb)
        if not torch.allclose(suffix, full, atol=1e-4):
            raise AssertionError(f"suffix-only and full forward disagree at {loc.id}: {(suffix - full).abs().max():.2e}")
        t_suffix = seconds(lambda: backbone.resume(loc.id, h, xb), repeats)
        t_full = seconds(lambda: full_forward_with_patch(backbone, loc.layer, loc.position, h, xb), repeats)
        rows.append({"depth": depth, "site": loc.id, "suffix_s": t_suffix, "full_s": t_full})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("depth  site           suffix_s   full_s   full/suffix")
    for depth in args.layers:
        rows = measure(depth, args.width, args.pairs, args.repeats, args.seed)
        for r in rows:
            print(f"{r['depth']:5d}  {r['site']:13s}  {r['suffix_s']:8.4f}  {r['full_s']:7.4f}  {r['full_s'] / r['suffix_s']:6.2f}x")
        total_suffix, total_full = sum(r["suffix_s"] for r in rows), sum(r["full_s"] for r in rows)
        print(f"depth {depth}: all {len(rows)} sites, one intervention batch each: full {total_full:.3f} s, "
              f"suffix-only {total_suffix:.3f} s, ratio {total_full / total_suffix:.2f}x")


if __name__ == "__main__":
    main()
