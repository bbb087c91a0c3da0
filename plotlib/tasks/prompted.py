"""Tasks posed as text prompts to a decoder-only transformer, answered by one token.

A prompted task writes each input row as a prompt with the character offsets of its named positions
(:meth:`PromptedTask.prompt`) and lists its vocabulary and answer words. This base class does the rest,
the same way for every such task: the word-level tokenizer of a model trained here (or a pretrained
model's own), the answer tokens' ids, encoding with the token index of each named position, building a
GPT-2 or Llama backbone from the spec (or loading a pretrained one), and the (layer, position) site grid.
"""
from __future__ import annotations

from abc import abstractmethod
from functools import cached_property
from typing import Any

import pandas as pd
import torch

from plotlib.sites import Location
from plotlib.tasks import Task

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[EOS]")


def word_tokenizer(words: list[str]):
    """A word-level fast tokenizer (``tokenizers``) over ``words``, splitting on whitespace and punctuation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *words]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]",
                                   padding_side="right")


class PromptedTask(Task):
    """A task whose backbone is a causal LM. Subclasses set ``position_names`` (every named position the
    prompt marks; ``last`` among them), ``positions`` (those on the site grid) and ``answer_words``, and
    implement :meth:`prompt` and :meth:`words`."""

    position_names: tuple[str, ...] = ("last",)
    positions: tuple[str, ...] = ("last",)
    answer_words: tuple[str, ...] = ()

    def _grid_positions(self, options: dict[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
        """The spec's ``positions`` option, checked: ``last`` and named positions only."""
        positions = tuple(options.get("positions", default))
        if "last" not in positions or set(positions) - set(self.position_names):
            raise ValueError(f"{self.name} positions must include 'last' and come from {list(self.position_names)}, "
                             f"got {list(positions)}")
        return positions

    @abstractmethod
    def words(self) -> list[str]:
        """Every word a prompt may contain (the vocabulary of the tokenizer trained here)."""

    @abstractmethod
    def prompt(self, row: dict) -> tuple[str, dict[str, Any]]:
        """The prompt text and the character offset of each named position's word (a list, for a span)."""

    @property
    def spans(self) -> dict[str, int]:
        """Named positions that mark several tokens per row, with their token counts."""
        return {}

    def label(self, output_value: Any) -> int:
        return self.answer_words.index(str(output_value))

    @cached_property
    def tokenizer(self):
        if self.backbone_options.get("kind") == "pretrained":
            from plotlib.lm import load_tokenizer
            return load_tokenizer(self.backbone_options.get("pretrained"))
        return word_tokenizer(self.words())

    @cached_property
    def answer_token_ids(self) -> list[int]:
        """The vocabulary id of each answer word as the model would write it after the prompt."""
        ids = []
        for word in self.answer_words:
            pieces = self.tokenizer.encode(f" {word}", add_special_tokens=False)
            if len(pieces) != 1:
                raise ValueError(f"answer {word!r} is not a single token for this tokenizer: {pieces}")
            ids.append(pieces[0])
        return ids

    def encode(self, inputs: pd.DataFrame):
        """Right-padded token ids with the token index (indices, for a span) of each named position per row."""
        from plotlib.lm import LMInputs

        texts, offsets = zip(*(self.prompt(r) for r in inputs.to_dict("records")))
        enc = self.tokenizer(list(texts), padding=True, return_offsets_mapping=True)  # lists: faster than "pt"
        positions = {name: [] for name in self.position_names}
        for row, (chars, spans, mask) in enumerate(zip(offsets, enc["offset_mapping"], enc["attention_mask"])):
            token_at = {}  # character -> the first real token covering it
            for t, (start, end) in enumerate(spans):
                if mask[t]:
                    for char in range(start, end):
                        token_at.setdefault(char, t)
            for name in self.position_names:
                wanted = chars[name] if name in self.spans else [chars[name]]
                if any(char not in token_at for char in wanted):
                    raise ValueError(f"position {name!r} (characters {wanted}) maps to no token in {texts[row]!r}")
                tokens = [token_at[char] for char in wanted]
                positions[name].append(tokens if name in self.spans else tokens[0])
        positions = {name: torch.tensor(rows, dtype=torch.long) for name, rows in positions.items()}
        ids, mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
        if not torch.equal(positions["last"], mask.sum(1) - 1):
            raise ValueError("the prompt's last character must be in its last token")
        return LMInputs(ids, mask, positions)

    # --- backbone and sites ----------------------------------------------------------------------

    def build_backbone(self, options: dict[str, Any], seed: int) -> torch.nn.Module:
        """A fresh, seeded GPT-2 or Llama (``architecture``; ``layers`` x ``width``, ``heads``, initial weights
        of standard deviation ``init_std``) over the word-level vocabulary, or the pretrained model named by
        ``backbone.pretrained``."""
        from plotlib.lm import CausalLMBackbone, load_causal_lm

        if options.get("kind") == "pretrained":
            model, _ = load_causal_lm(options["pretrained"], options.get("dtype", "float32"), options.get("device", "auto"))
            return CausalLMBackbone(model, self.answer_token_ids, self.spans)
        torch.manual_seed(seed)
        tok = self.tokenizer
        layers, width, heads = int(options.get("layers", 4)), int(options.get("width", 128)), int(options.get("heads", 4))
        init_std = float(options.get("init_std", 0.02))
        if options.get("architecture", "gpt2") == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM
            config = LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                 num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=int(options.get("max_length", 64)),
                                 initializer_range=init_std,
                                 bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            return CausalLMBackbone(LlamaForCausalLM(config), self.answer_token_ids, self.spans)
        from transformers import GPT2Config, GPT2LMHeadModel
        config = GPT2Config(vocab_size=len(tok), n_positions=int(options.get("max_length", 64)), n_embd=width, n_layer=layers, n_head=heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=init_std,
                            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return CausalLMBackbone(GPT2LMHeadModel(config), self.answer_token_ids, self.spans)

    def coarse_locations(self, backbone: torch.nn.Module) -> list[Location]:
        return [Location(layer, pos) for layer in backbone.layer_names for pos in self.positions]

    def planned_locations(self, backbone_options: dict[str, Any], seed: int) -> list[Location]:
        """From the configuration alone: a pretrained model is not loaded just to count its layers."""
        from plotlib.lm import layer_names_for

        if backbone_options.get("kind") == "pretrained":
            from plotlib.lm import load_config
            depth = load_config(backbone_options["pretrained"]).num_hidden_layers
        else:
            depth = int(backbone_options.get("layers", 4))
        return [Location(layer, pos) for layer in layer_names_for(depth) for pos in self.positions]

    def planned_widths(self, backbone_options: dict[str, Any], seed: int) -> dict[str, int]:
        """Residual width times the position's token count, from the configuration alone."""
        if backbone_options.get("kind") == "pretrained":
            from plotlib.lm import load_config
            width = load_config(backbone_options["pretrained"]).get_text_config().hidden_size
        else:
            width = int(backbone_options.get("width", 128))
        return {loc.id: width * self.spans.get(loc.position, 1) for loc in self.planned_locations(backbone_options, seed)}

    def save_backbone(self, model: torch.nn.Module, path: str) -> None:
        from plotlib.lm import save_lm_backbone
        save_lm_backbone(model, path, self.backbone_options if self.backbone_options.get("kind") == "pretrained" else None,
                         self.tokenizer)

    def load_backbone(self, path: str) -> torch.nn.Module:
        from plotlib.lm import load_lm_backbone
        return load_lm_backbone(path, self.spans)
