"""Multiple-choice QA on colors (METHOD.md 9.3; MIB's CopyColors MCQA), for a causal LM.

"The banana is yellow. The sky is blue. What color is the banana? A. red B. yellow C. green D. blue
Answer:" -> "B". Target variables: ``answer_pointer`` (which choice is correct) and ``answer_token``
(the letter to output). Counterfactual families: ``randomLetter`` (the choice letters changed),
``sameLetter`` (choices reordered and letters redrawn so that the correct choice moves but keeps the base's
answer letter: the pointer changes, the token does not), ``answerPosition`` (choices reordered, so the
correct one moves) and ``both``. Each variable is invariant on at least a quarter of the pairs.

The backbone is a decoder-only transformer: one built and trained here (GPT-2 or Llama layers, with a
word-level tokenizer saved beside its weights), or any pretrained ``AutoModelForCausalLM`` (``backbone.kind: pretrained``).
Its readout is a softmax over the answer letters' tokens at the last position. Coarse sites are the
residual stream at the embedding output and after every layer, at named token positions: ``last``,
the correct choice's ``letter`` and ``color``, and ``choices`` (every choice's color, a span whose
activation is the choices' residuals concatenated in slot order).
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.sites import Location
from plotlib.tasks import Task, register_task

OBJECTS = ("banana", "apple", "sky", "grass", "cherry", "lemon", "snow", "coal", "tomato", "carrot", "ocean", "leaf",
           "rose", "violet", "pumpkin", "lime", "plum", "sand", "cloud", "frog", "flamingo", "crow", "salmon", "cocoa")
COLORS = ("red", "yellow", "green", "blue", "white", "black", "orange", "purple", "pink", "brown", "gray", "gold")
LETTERS = tuple("ABCDEFGHJKLMNPRS")
POSITIONS = ("last", "letter", "color", "choices")
#: The order matters: with n not a multiple of 4 the first families get one pair more, and the first two
#: are the ones that leave a variable invariant (answer_pointer on randomLetter, answer_token on sameLetter).
FAMILIES = ("randomLetter", "sameLetter", "answerPosition", "both")


def _word_tokenizer():
    """The word-level tokenizer of the transformer trained here (``tokenizers``), as a fast HF tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[EOS]", "The", "is", "What", "color", "the", "Answer", ".", "?", ":",
             *OBJECTS, *COLORS, *LETTERS]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]",
                                   padding_side="right")


@register_task("mcqa")
class MCQA(Task):
    """Options: ``n_choices`` (4), ``n_facts`` (2: the asked object's fact and distractors, shuffled),
    ``n_letters`` (letters drawn per prompt come from the first ``n_letters`` of A..S, 8)."""

    targets = ("answer_pointer", "answer_token")

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n_choices = int(options.get("n_choices", 4))
        self.n_facts = int(options.get("n_facts", 2))
        self.letters = LETTERS[: int(options.get("n_letters", 8))]
        if not 2 <= self.n_choices <= len(self.letters) or self.n_choices > len(COLORS):
            raise ValueError(f"mcqa needs 2 <= n_choices <= n_letters ({len(self.letters)}), got {self.n_choices}")
        if not 1 <= self.n_facts <= min(self.n_choices, len(OBJECTS)):
            raise ValueError(f"mcqa needs 1 <= n_facts <= n_choices, got {self.n_facts}")
        self.readout = SoftmaxReadout(len(self.letters))
        k = self.n_choices
        # facts and their order shape the prompt, not the answer: inputs without children
        self.input_names = ("object", "color", "facts", "order", *(f"choice{i}" for i in range(k)), *(f"letter{i}" for i in range(k)))
        self.positions = tuple(options.get("positions", POSITIONS))
        if "last" not in self.positions or set(self.positions) - set(POSITIONS):
            raise ValueError(f"mcqa positions must include 'last' and come from {POSITIONS}, got {list(self.positions)}")
        self.causal_model = CausalModel(
            inputs=self.input_names,
            parents={"answer_pointer": ("color", *(f"choice{i}" for i in range(k))),
                     "answer_token": ("answer_pointer", *(f"letter{i}" for i in range(k))),
                     "O": ("answer_token",)},
            mechanisms={"answer_pointer": lambda color, *choices: choices.index(color),
                        "answer_token": lambda pointer, *letters: letters[pointer],
                        "O": lambda token: token},
            output="O")

    # --- inputs ----------------------------------------------------------------------------------

    def sample_inputs(self, rng: np.random.Generator, n: int) -> pd.DataFrame:
        """Facts about ``n_facts`` distinct objects with distinct colors (the first is asked about, the
        order of facts is shuffled); the choices are distinct colors, one of them the asked object's."""
        rows = []
        for _ in range(n):
            objects = rng.choice(len(OBJECTS), self.n_facts, replace=False)
            choices = rng.choice(len(COLORS), self.n_choices, replace=False)
            fact_colors = rng.permutation(choices)[: self.n_facts]  # every fact's color is among the choices
            letters = np.sort(rng.choice(len(self.letters), self.n_choices, replace=False))
            row = {"object": OBJECTS[objects[0]], "color": COLORS[fact_colors[0]],
                   "facts": " ".join(f"{OBJECTS[o]}={COLORS[c]}" for o, c in zip(objects, fact_colors)),
                   "order": " ".join(map(str, rng.permutation(self.n_facts)))}
            row.update({f"choice{i}": COLORS[c] for i, c in enumerate(choices)})
            row.update({f"letter{i}": self.letters[j] for i, j in enumerate(letters)})
            rows.append(row)
        return pd.DataFrame(rows)

    def _counterfactual(self, rng: np.random.Generator, base: pd.Series, family: str) -> dict | None:
        """A source for ``base``: its choices reordered so the correct one moves (answerPosition), new
        letters with a different letter at the correct choice (randomLetter, so the answer changes), both
        (the letters differ somewhere), or the correct choice moved to the slot where redrawn letters put the
        base's answer letter (sameLetter; None when the base's letter can only sit at its own slot)."""
        source = base.to_dict()
        k = self.n_choices
        colors = [base[f"choice{i}"] for i in range(k)]
        old = [base[f"letter{i}"] for i in range(k)]
        pointer = colors.index(base["color"])
        if family == "sameLetter":
            answer = self.letters.index(old[pointer])
            below, above = answer, len(self.letters) - 1 - answer
            slots = [q for q in range(k) if q != pointer and q <= below and k - 1 - q <= above]
            if not slots:
                return None
            q = int(rng.choice(slots))
            new = sorted([*rng.choice(self.letters[:answer], q, replace=False).tolist(), old[pointer],
                          *rng.choice(self.letters[answer + 1:], k - 1 - q, replace=False).tolist()])
            others = rng.permutation([c for c in colors if c != base["color"]]).tolist()
            order = others[:q] + [base["color"]] + others[q:]
            source.update({f"choice{i}": order[i] for i in range(k)})
            source.update({f"letter{i}": new[i] for i in range(k)})
            return source
        if family in ("answerPosition", "both"):
            while (perm := rng.permutation(k))[pointer] == pointer:
                pass  # the correct color moves to another slot
            source.update({f"choice{perm[i]}": colors[i] for i in range(k)})
        if family in ("randomLetter", "both"):
            while True:
                new = sorted(rng.choice(self.letters, k, replace=False).tolist())
                if (new[pointer] != old[pointer]) if family == "randomLetter" else (new != old):
                    break
            source.update({f"letter{i}": new[i] for i in range(k)})
        return source

    def sample_pairs(self, rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Bases from :meth:`sample_inputs`; the families cycle so each gets a quarter of the pairs. A
        sameLetter pair whose base admits no such source gets a fresh base."""
        base = self.sample_inputs(rng, n)
        families = [FAMILIES[i % len(FAMILIES)] for i in rng.permutation(n)]
        sources = []
        for i, family in enumerate(families):
            while (source := self._counterfactual(rng, base.iloc[i], family)) is None:
                base.iloc[i] = self.sample_inputs(rng, 1).iloc[0]
            sources.append(source)
        return base, pd.DataFrame(sources)[base.columns], families

    def label(self, output_value: Any) -> int:
        return self.letters.index(output_value)

    def outputs(self, inputs: pd.DataFrame, interventions: dict[str, Any] | None = None) -> np.ndarray:
        k = self.n_choices
        choices = inputs[[f"choice{i}" for i in range(k)]].to_numpy()
        letters = inputs[[f"letter{i}" for i in range(k)]].to_numpy()
        pointer = (choices == inputs["color"].to_numpy()[:, None]).argmax(1)
        if interventions and "answer_pointer" in interventions:
            pointer = np.asarray(interventions["answer_pointer"])
        token = letters[np.arange(len(inputs)), pointer]
        if interventions and "answer_token" in interventions:
            token = np.asarray(interventions["answer_token"])
        return np.array([self.letters.index(t) for t in np.broadcast_to(token, (len(inputs),))])

    # --- text and tokens -------------------------------------------------------------------------

    def prompt(self, row: dict) -> tuple[str, dict[str, Any]]:
        """The prompt text and the character offsets of the named positions' words (a list for a span)."""
        facts = [f.split("=") for f in row["facts"].split(" ")]
        order = [int(i) for i in row["order"].split(" ")]
        text = " ".join(f"The {facts[i][0]} is {facts[i][1]}." for i in order)
        text += f" What color is the {row['object']}?"
        chars: dict[str, Any] = {"choices": []}
        pointer = [row[f"choice{i}"] for i in range(self.n_choices)].index(row["color"])
        for i in range(self.n_choices):
            text += " "
            if i == pointer:
                chars["letter"] = len(text)
            text += f"{row[f'letter{i}']}. "
            if i == pointer:
                chars["color"] = len(text)
            chars["choices"].append(len(text))
            text += row[f"choice{i}"]
        text += " Answer:"
        chars["last"] = len(text) - 1
        return text, chars

    @property
    def spans(self) -> dict[str, int]:
        """Positions that name several tokens per row, with their token counts."""
        return {"choices": self.n_choices}

    @cached_property
    def tokenizer(self):
        pretrained = self.backbone_options.get("pretrained")
        if self.backbone_options.get("kind") == "pretrained":
            from plotlib.lm import load_tokenizer
            return load_tokenizer(pretrained)
        return _word_tokenizer()

    @cached_property
    def answer_token_ids(self) -> list[int]:
        """The vocabulary id of each answer letter as the model would write it after "Answer:"."""
        ids = []
        for letter in self.letters:
            pieces = self.tokenizer.encode(f" {letter}", add_special_tokens=False)
            if len(pieces) != 1:
                raise ValueError(f"answer letter {letter!r} is not a single token for this tokenizer: {pieces}")
            ids.append(pieces[0])
        return ids

    def encode(self, inputs: pd.DataFrame):
        """Right-padded token ids with the token index (indices, for a span) of each named position per row."""
        from plotlib.lm import LMInputs

        texts, offsets = zip(*(self.prompt(r) for r in inputs.to_dict("records")))
        enc = self.tokenizer(list(texts), padding=True, return_offsets_mapping=True)  # lists: faster than "pt"
        positions = {name: [] for name in POSITIONS}
        for row, (chars, spans, mask) in enumerate(zip(offsets, enc["offset_mapping"], enc["attention_mask"])):
            token_at = {}  # character -> the first real token covering it
            for t, (start, end) in enumerate(spans):
                if mask[t]:
                    for char in range(start, end):
                        token_at.setdefault(char, t)
            for name in POSITIONS:
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
        """A fresh, seeded GPT-2 or Llama (``architecture``; ``layers`` x ``width``, ``heads``) over the
        word-level vocabulary, or the pretrained model named by ``backbone.pretrained``."""
        from plotlib.lm import CausalLMBackbone, load_causal_lm

        if options.get("kind") == "pretrained":
            model, _ = load_causal_lm(options["pretrained"], options.get("dtype", "float32"), options.get("device", "auto"))
            return CausalLMBackbone(model, self.answer_token_ids, self.spans)
        torch.manual_seed(seed)
        tok = self.tokenizer
        layers, width, heads = int(options.get("layers", 4)), int(options.get("width", 128)), int(options.get("heads", 4))
        if options.get("architecture", "gpt2") == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM
            config = LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                 num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=int(options.get("max_length", 64)),
                                 bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            return CausalLMBackbone(LlamaForCausalLM(config), self.answer_token_ids, self.spans)
        from transformers import GPT2Config, GPT2LMHeadModel
        config = GPT2Config(vocab_size=len(tok), n_positions=int(options.get("max_length", 64)), n_embd=width, n_layer=layers, n_head=heads,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
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

    def save_backbone(self, model: torch.nn.Module, path: str) -> None:
        from plotlib.lm import save_lm_backbone
        save_lm_backbone(model, path, self.backbone_options if self.backbone_options.get("kind") == "pretrained" else None,
                         self.tokenizer)

    def load_backbone(self, path: str) -> torch.nn.Module:
        from plotlib.lm import load_lm_backbone
        return load_lm_backbone(path, self.spans)
