"""CausalLMBackbone on tiny random GPT-2 and Llama models: suffix-only resumption equals a hooked full
forward, padding is harmless, gradients reach the patch, and load_causal_lm round-trips saved models."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from plotlib.lm import CausalLMBackbone, LMInputs, find_decoder_layers, load_causal_lm, read_position

ANSWERS = [3, 7, 11, 60]
CONFIGS = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                  num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                                                  max_position_embeddings=32)),
}


def tiny_model(kind: str):
    torch.manual_seed(0)
    return CONFIGS[kind]().eval().requires_grad_(False)


@pytest.fixture(params=sorted(CONFIGS))
def backbone(request) -> CausalLMBackbone:
    return CausalLMBackbone(tiny_model(request.param), ANSWERS, spans={"pair": 2})


def make_inputs(lengths: list[int], T: int = 8, seed: int = 1) -> LMInputs:
    """Right-padded random prompts of the given lengths, with positions 'last', 'mid' and the span 'pair'
    (the first token and 'mid')."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (len(lengths), T), generator=g)
    mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).long()
    last = torch.tensor(lengths) - 1
    pair = torch.stack([torch.zeros_like(last), last // 2], 1)
    return LMInputs(ids * mask, mask, {"last": last, "mid": last // 2, "pair": pair})


def hooked_full_forward(backbone: CausalLMBackbone, x: LMInputs, layer: str, position: str, h: torch.Tensor,
                        stored: torch.dtype | None = None):
    """Reference: a normal full forward with a hook writing h into the stream at (layer, position); with
    ``stored``, the hook first rounds that stream to the dtype a cache stores it in."""
    pos = x.positions[position]
    pos = pos[:, None] if pos.dim() == 1 else pos

    def write(t: torch.Tensor) -> torch.Tensor:
        t = t.clone() if stored is None else t.to(stored).to(t.dtype)
        for row in range(len(x)):
            for j, token in enumerate(pos[row].tolist()):
                t[row, token] = h[row, j * t.shape[-1]:(j + 1) * t.shape[-1]]
        return t

    i = backbone.layer_names.index(layer)
    if i == 0:
        hook = backbone.layers[0].register_forward_pre_hook(lambda _, args: (write(args[0]), *args[1:]))
    else:
        hook = backbone.layers[i - 1].register_forward_hook(lambda _, __, out: write(out))
    try:
        logits = backbone.model(input_ids=x.input_ids, attention_mask=x.attention_mask).logits
    finally:
        hook.remove()
    return logits[torch.arange(len(x)), x.positions["last"]][:, ANSWERS]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_find_decoder_layers(kind):
    model = tiny_model(kind)
    layers = find_decoder_layers(model)
    assert len(layers) == 2
    assert layers is (model.transformer.h if kind == "gpt2" else model.model.layers)


def test_names_and_widths(backbone):
    assert backbone.layer_names == ["emb", "L1", "L2"]
    assert backbone.width("L1") == backbone.width("emb@last") == 32 and backbone.width("L1@pair") == 64
    with pytest.raises(KeyError, match="unknown layer 'L3'"):
        backbone.width("L3@last")


def test_resume_equals_hooked_full_forward(backbone):
    x = make_inputs([5, 8, 3, 6])
    x = x.with_streams(backbone.capture(x, backbone.layer_names, batch_size=3))
    assert x.streams["L2"].shape == (4, 8, 32)
    torch.testing.assert_close(x.streams["logits"], backbone(x))
    g = torch.Generator().manual_seed(2)
    for layer in backbone.layer_names:
        for position in ("last", "mid", "pair"):
            location = f"{layer}@{position}"
            h = torch.randn(len(x), backbone.width(location), generator=g)
            expected = hooked_full_forward(backbone, x, layer, position, h)
            torch.testing.assert_close(backbone.resume(location, h, x), expected, atol=1e-5, rtol=1e-5)
            own = read_position(x.streams[layer], x.positions[position])
            torch.testing.assert_close(backbone.resume(location, own, x), backbone(x), atol=1e-5, rtol=1e-5)
    h = torch.randn(len(x), 32, generator=g)
    # the test is not vacuous: patching an earlier position before the last layer changes the readout
    assert not torch.allclose(backbone.resume("L1@mid", h, x), backbone(x), atol=1e-4)
    # the model is left intact: no stubs or hooks remain
    assert all(type(layer).__name__ != "_Skip" for layer in backbone.layers)
    torch.testing.assert_close(backbone(x), x.streams["logits"])


def test_prefix_context_resume_equals_hooked_full_forward(backbone):
    """With a prefix context only the tokens from the patched position on run; right-padded rows of
    several lengths, learned (GPT-2) and rotary (Llama, grouped keys) positions, every layer."""
    x = make_inputs([5, 8, 3, 6])
    x = x.with_streams(backbone.capture(x, backbone.layer_names))
    g = torch.Generator().manual_seed(3)
    for layer in backbone.layer_names:
        for position in ("last", "mid", "pair"):
            location = f"{layer}@{position}"
            ready = backbone.resume_context(location, x)
            # nothing to reuse after the last layer, or before a span that starts at token 0
            assert (location in ready.contexts) == (layer != "L2" and position != "pair")
            h = torch.randn(len(x), backbone.width(location), generator=g)
            expected = hooked_full_forward(backbone, x, layer, position, h)
            torch.testing.assert_close(backbone.resume(location, h, ready), expected, atol=1e-5, rtol=1e-5)
            rows = torch.tensor([3, 0, 0])  # contexts index and tile with the batch
            torch.testing.assert_close(backbone.resume(location, h[rows].repeat(2, 1), ready[rows].repeat_rows(2)),
                                       expected[rows].repeat(2, 1), atol=1e-5, rtol=1e-5)
    ready = backbone.resume_context("emb@last", x)
    assert ready.contexts["emb@last"].shape[:3] == (4, 2, 2) and ready.contexts["emb@last"].shape[-2] == 2  # min last = 2
    h = torch.randn(len(x), 32, requires_grad=True)
    backbone.resume("emb@last", h, ready).sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_cache_resumes_like_hooked_full_forward(backbone, dtype):
    """Streams cached in half precision: resuming equals the hooked full forward whose stream there is
    rounded alike; with prefix reuse (keys and values kept in the cache's dtype too) up to that rounding."""
    x = make_inputs([5, 8, 3, 6])
    x = x.with_streams({k: v.to(dtype) for k, v in backbone.capture(x, backbone.layer_names).items() if k != "logits"})
    g, tol = torch.Generator().manual_seed(4), 8 * torch.finfo(dtype).eps
    for layer in backbone.layer_names:
        for position in ("last", "mid", "pair"):
            location = f"{layer}@{position}"
            h = torch.randn(len(x), backbone.width(location), generator=g)
            expected = hooked_full_forward(backbone, x, layer, position, h, stored=dtype)
            alone = x.keep(layer)
            assert list(alone.streams) == [layer]
            torch.testing.assert_close(backbone.resume(location, h, alone), expected, atol=1e-5, rtol=1e-5)
            ready = backbone.resume_context(location, alone)
            assert (location in ready.contexts) == (layer != "L2" and position != "pair")  # the check accepts the rounding
            if location in ready.contexts:
                assert ready.contexts[location].dtype == dtype
            scale = float(expected.abs().max())
            torch.testing.assert_close(backbone.resume(location, h, ready), expected, atol=tol * scale, rtol=tol)
    # the rounding is real: a float32 stream gives a different readout than the half one
    assert not torch.equal(hooked_full_forward(backbone, x, "L1", "mid", h[:, :32]),
                           hooked_full_forward(backbone, x, "L1", "mid", h[:, :32], stored=dtype))


def test_resume_needs_cached_stream(backbone):
    x = make_inputs([4, 4])
    with pytest.raises(KeyError, match="cached stream 'L1'"):
        backbone.resume("L1@last", torch.zeros(2, 32), x)


def test_right_padding_matches_unpadded_rows(backbone):
    lengths = [3, 8, 5]
    x = make_inputs(lengths)
    batched = backbone(x)
    for i, n in enumerate(lengths):
        alone = LMInputs(x.input_ids[i:i + 1, :n], x.attention_mask[i:i + 1, :n], {"last": torch.tensor([n - 1])})
        torch.testing.assert_close(batched[i:i + 1], backbone(alone), atol=1e-5, rtol=1e-5)


def test_gradient_reaches_patch(backbone):
    x = make_inputs([6, 4])
    x = x.with_streams(backbone.capture(x, ["L1"]))
    h = torch.randn(2, 32, requires_grad=True)
    backbone.resume("L1@mid", h, x).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def test_lm_inputs_index_like_tensors():
    x = make_inputs([2, 3, 4, 5])
    x = x.with_streams({"L1": torch.arange(4 * 8 * 2.0).reshape(4, 8, 2)})
    idx = torch.tensor([3, 0])
    sub = x[idx]
    assert len(sub) == 2
    assert torch.equal(sub.input_ids, x.input_ids[idx]) and torch.equal(sub.positions["mid"], x.positions["mid"][idx])
    assert torch.equal(sub.streams["L1"], x.streams["L1"][idx])
    assert torch.equal(x[1:3].attention_mask, x.attention_mask[1:3]) and len(x[2]) == 1
    tiled = x.repeat_rows(3)
    assert len(tiled) == 12
    assert torch.equal(tiled.input_ids, x.input_ids.repeat(3, 1))
    assert torch.equal(tiled.positions["last"], x.positions["last"].repeat(3))
    assert torch.equal(tiled.positions["pair"], x.positions["pair"].repeat(3, 1))
    assert torch.equal(tiled.streams["L1"], x.streams["L1"].repeat(3, 1, 1))
    both = x.with_streams({"L2": torch.zeros(4, 8, 2)})
    assert sorted(both.streams) == ["L1", "L2"] and sorted(x.streams) == ["L1"]
    with pytest.raises(ValueError, match="'last'"):
        LMInputs(x.input_ids, x.attention_mask, {"mid": x.positions["mid"]})
    with pytest.raises(ValueError, match="position 'last' must be"):
        LMInputs(x.input_ids, x.attention_mask, {"last": x.positions["pair"]})


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{f"w{i}": i for i in range(3, 64)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_load_causal_lm_round_trip(kind, tmp_path):
    model = tiny_model(kind)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, tokenizer = load_causal_lm(str(tmp_path), device="cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert tokenizer.padding_side == "right" and tokenizer.pad_token == "[PAD]"
    enc = tokenizer(["w5 w9 w3", "w4 w60"], padding=True, return_tensors="pt")
    x = LMInputs(enc["input_ids"], enc["attention_mask"], {"last": enc["attention_mask"].sum(1) - 1})
    torch.testing.assert_close(CausalLMBackbone(loaded, ANSWERS)(x), CausalLMBackbone(model, ANSWERS)(x))


def test_load_causal_lm_errors(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_causal_lm(missing)
    with pytest.raises(OSError, match="hub unreachable or wrong name"):
        load_causal_lm("no-such-org/no-such-model-xyz")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a causal language model.*BertConfig"):
        load_causal_lm(str(tmp_path / "bert"), device="cpu")
    with pytest.raises(ValueError, match="dtype"):
        load_causal_lm(str(tmp_path / "bert"), dtype="int8")


def test_forward_rows_shrink_with_the_streams_they_hold(backbone):
    x = make_inputs([5, 8, 3, 6])  # 8 tokens of width 32: 256 values per row
    assert backbone.rows_for(x) == CausalLMBackbone.max_batch_rows  # small streams: the whole cap
    backbone.stream_values = 256 * 3
    assert backbone.rows_for(x) == 3
    backbone.stream_values = None  # fixed by the spec (batching.rows)
    assert backbone.rows_for(x) == CausalLMBackbone.max_batch_rows
