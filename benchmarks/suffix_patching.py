"""Suffix-only patching and prefix reuse versus a plain full forward per intervention, measured in one run.

For every coarse site (residual stream after a layer, at a token position) of an MCQA transformer, the
same batch of interchange interventions is run three ways:
  full:   run the whole model on the base prompts with a hook that writes the vector at that layer;
  suffix: write the source vector into the base's cached residual stream and run only the later layers;
  prefix: the same, with the prefix context (keys and values of the tokens before the patched position,
          built once per bank and site: `context_s`), so only the later tokens run (what every plotlib
          stage does).
Outputs are checked to agree. Printed per depth and site: the three forward times, the context's one-off
cost, and one DAS training step (forward and backward to the patch) without and with prefix reuse.

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


def training_step(backbone: CausalLMBackbone, location: str, h: torch.Tensor, x) -> None:
    """Forward and backward to the patched vector, as one DAS step does."""
    h = h.detach().requires_grad_(True)
    backbone.resume(location, h, x).sum().backward()


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
        start = time.perf_counter()
        ready = backbone.resume_context(loc.id, xb)
        t_context = time.perf_counter() - start
        suffix, prefix = backbone.resume(loc.id, h, xb), backbone.resume(loc.id, h, ready)
        full = full_forward_with_patch(backbone, loc.layer, loc.position, h, xb)
        for name, got in (("suffix-only", suffix), ("prefix reuse", prefix)):
            if not torch.allclose(got, full, atol=1e-4):
                raise AssertionError(f"{name} and full forward disagree at {loc.id}: {(got - full).abs().max():.2e}")
        row = {"depth": depth, "site": loc.id, "context_s": t_context,
               "full_s": seconds(lambda: full_forward_with_patch(backbone, loc.layer, loc.position, h, xb), repeats)}
        for key, x in (("suffix", xb), ("prefix", ready)):
            row[f"{key}_s"] = seconds(lambda x=x: backbone.resume(loc.id, h, x), repeats)
            with torch.enable_grad():
                row[f"step_{key}_s"] = seconds(lambda x=x: training_step(backbone, loc.id, h, x), repeats)
        rows.append(row)
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
    print("depth  site           full_s  suffix_s  prefix_s  context_s  step_suffix_s  step_prefix_s")
    for depth in args.layers:
        rows = measure(depth, args.width, args.pairs, args.repeats, args.seed)
        for r in rows:
            print(f"{r['depth']:5d}  {r['site']:13s}  {r['full_s']:6.4f}  {r['suffix_s']:8.4f}  {r['prefix_s']:8.4f}  "
                  f"{r['context_s']:9.4f}  {r['step_suffix_s']:13.4f}  {r['step_prefix_s']:13.4f}")
        total = {key: sum(r[key] for r in rows) for key in rows[0] if key.endswith("_s")}
        print(f"depth {depth}: all {len(rows)} sites, one intervention batch each: full {total['full_s']:.3f} s, "
              f"suffix-only {total['suffix_s']:.3f} s ({total['full_s'] / total['suffix_s']:.2f}x), prefix reuse "
              f"{total['prefix_s']:.3f} s ({total['full_s'] / total['prefix_s']:.2f}x) plus {total['context_s']:.3f} s of "
              f"contexts once; one training step at every site: {total['step_suffix_s']:.3f} s suffix-only, "
              f"{total['step_prefix_s']:.3f} s with prefix reuse ({total['step_suffix_s'] / total['step_prefix_s']:.2f}x)")


if __name__ == "__main__":
    main()
