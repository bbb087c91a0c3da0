"""Multiple-choice QA on colors (docs/method.md §9.3; MIB's CopyColors MCQA), for a causal LM.

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

from typing import Any

import numpy as np
import pandas as pd

from plotlib.causal import CausalModel
from plotlib.readout import SoftmaxReadout
from plotlib.tasks import register_task
from plotlib.tasks.prompted import PromptedTask

OBJECTS = ("banana", "apple", "sky", "grass", "cherry", "lemon", "snow", "coal", "tomato", "carrot", "ocean", "leaf",
           "rose", "violet", "pumpkin", "lime", "plum", "sand", "cloud", "frog", "flamingo", "crow", "salmon", "cocoa")
COLORS = ("red", "yellow", "green", "blue", "white", "black", "orange", "purple", "pink", "brown", "gray", "gold")
LETTERS = tuple("ABCDEFGHJKLMNPRS")
POSITIONS = ("last", "letter", "color", "choices")
#: The order matters: with n not a multiple of 4 the first families get one pair more, and the first two
#: are the ones that leave a variable invariant (answer_pointer on randomLetter, answer_token on sameLetter).
FAMILIES = ("randomLetter", "sameLetter", "answerPosition", "both")


@register_task("mcqa")
class MCQA(PromptedTask):
    """Options: ``n_choices`` (4), ``n_facts`` (2: the asked object's fact and distractors, shuffled),
    ``n_letters`` (letters drawn per prompt come from the first ``n_letters`` of A..S, 8)."""

    targets = ("answer_pointer", "answer_token")
    position_names = POSITIONS

    def __init__(self, options: dict[str, Any], seed: int) -> None:
        super().__init__(options, seed)
        self.n_choices = int(options.get("n_choices", 4))
        self.n_facts = int(options.get("n_facts", 2))
        self.letters = LETTERS[: int(options.get("n_letters", 8))]
        if not 2 <= self.n_choices <= len(self.letters) or self.n_choices > len(COLORS):
            raise ValueError(f"mcqa needs 2 <= n_choices <= n_letters ({len(self.letters)}), got {self.n_choices}")
        if not 1 <= self.n_facts <= min(self.n_choices, len(OBJECTS)):
            raise ValueError(f"mcqa needs 1 <= n_facts <= n_choices, got {self.n_facts}")
        self.answer_words = self.letters
        self.readout = SoftmaxReadout(len(self.letters))
        k = self.n_choices
        # facts and their order shape the prompt, not the answer: inputs without children
        self.input_names = ("object", "color", "facts", "order", *(f"choice{i}" for i in range(k)), *(f"letter{i}" for i in range(k)))
        self.positions = self._grid_positions(options, POSITIONS)
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

    def words(self) -> list[str]:
        return ["The", "is", "What", "color", "the", "Answer", ".", "?", ":", *OBJECTS, *COLORS, *LETTERS]

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
