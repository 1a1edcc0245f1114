"""Reward-model labeling (`labeling.judge: reward`): rank N candidates per prompt with a local reward model.

From the third reference pipeline: the generate stage samples
`labeling.reward.num_candidates` responses per prompt (`variant_a`,
`variant_b`, `variant_c`, ...), a sequence-classification reward model
(`labeling.reward.model_path`, one output logit) scores each as the
conversation (persona's serving system prompt, request, response), the best
becomes chosen and the worst rejected, and pairs whose score margin is under
`labeling.reward.min_margin` (0.05) are dropped.

A reward model scores each response on its own, so there is no position bias
to cancel: one forward pass per response, no "both orders".
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

from dpo_tasks.config import ConfigError, Persona, RewardConfig
from dpo_tasks.judges.base import Judge, OrderedVerdict, PairItem, PairJudgement
from dpo_tasks.prompts import system_prompt

log = logging.getLogger(__name__)


def candidate_fields(row: dict[str, Any]) -> list[str]:
    """`variant_a`, `variant_b`, ... in order: whatever the generate stage wrote."""
    return sorted(k for k in row if k.startswith("variant_") and len(k) == len("variant_a"))


class RewardJudge(Judge):
    name = "reward"

    def __init__(self, config: RewardConfig, *, max_length: int = 512, batch_size: int = 8):
        if not config.model_path:
            raise ConfigError("labeling.judge='reward' needs labeling.reward.model_path (a sequence-classification reward model)")
        self.config = config
        self.max_length, self.batch_size = max_length, batch_size
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(config.model_path, num_labels=1)
        if self.model.config.num_labels != 1:
            raise ConfigError(f"labeling.reward.model_path={config.model_path!r} has {self.model.config.num_labels} outputs; a reward model has 1")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The classifier reads the last non-pad token; it has to know which id is padding.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self._scored = 0

    def _text(self, persona: Persona, prompt: str, response: str) -> str:
        conv = [
            {"role": "system", "content": system_prompt(persona, "serving")},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(conv, tokenize=False)
        return "\n\n".join(m["content"] for m in conv)

    def score(self, persona: Persona, prompt: str, responses: Sequence[str]) -> list[float]:
        """One reward per response; batched, and independent of what else is in the batch."""
        torch = self._torch
        texts = [self._text(persona, prompt, r) for r in responses]
        out: list[float] = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[lo : lo + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=False)
                out += self.model(**enc).logits[:, 0].float().tolist()
        self._scored += len(texts)
        return out

    def compare_once(self, persona: Persona, prompt: str, first: str, second: str) -> OrderedVerdict:
        s1, s2 = self.score(persona, prompt, [first, second])
        pref = "tie" if abs(s1 - s2) < self.config.min_margin else "first" if s1 > s2 else "second"
        return OrderedVerdict(preferred=pref, reason=f"reward {s1:.4f} vs {s2:.4f}")  # type: ignore[arg-type]

    def judge_pairs(self, persona: Persona, items: Sequence[PairItem], *, both_orders: bool = True, progress: Any = None) -> list[PairJudgement]:
        out = []
        for item in items:
            sa, sb = self.score(persona, item.prompt, [item.response_a, item.response_b])
            margin = abs(sa - sb)
            winner = "tie" if margin < self.config.min_margin else "a" if sa > sb else "b"
            out.append(PairJudgement(id=item.id, status="tie" if winner == "tie" else "ok", winner=winner, margin=margin,  # type: ignore[arg-type]
                                     reason=f"reward a={sa:.4f} b={sb:.4f}", source=self.name))
            if progress is not None:
                progress.advance()
        return out

    def label_rows(self, persona: Persona, rows: Sequence[dict[str, Any]], drops: Counter, progress: Any = None) -> list[dict[str, Any]]:
        """Best vs worst of each row's candidates, as label-stage records; rows that give no pair are counted in `drops`."""
        labeled = []
        for n, row in enumerate(rows, start=1):
            fields = [f for f in candidate_fields(row) if isinstance(row[f], str) and row[f].strip()]
            texts = {row[f].strip() for f in fields}
            if not isinstance(row.get("id"), str) or not isinstance(row.get("prompt"), str):
                drops["malformed"] += 1
                log.warning("variants.jsonl record %d (id %r): missing or non-text id/prompt; skipped", n, row.get("id"))
            elif len(fields) < 2:
                drops["empty"] += 1
                log.warning("variants.jsonl record %d (id %r): fewer than two non-empty candidates; skipped", n, row.get("id"))
            elif len(texts) < 2:
                drops["identical"] += 1
            else:
                rewards = dict(zip(fields, self.score(persona, row["prompt"], [row[f] for f in fields])))
                best = max(fields, key=rewards.__getitem__)
                worst = min(fields, key=rewards.__getitem__)
                margin = rewards[best] - rewards[worst]
                if margin < self.config.min_margin:
                    drops["under_margin"] += 1
                else:
                    labeled.append({
                        "id": row["id"], "prompt": row["prompt"], "chosen": row[best], "rejected": row[worst],
                        "chosen_variant": best.removeprefix("variant_"), "rejected_variant": worst.removeprefix("variant_"),
                        "margin": round(margin, 6), "rewards": {f.removeprefix("variant_"): round(r, 6) for f, r in rewards.items()},
                        "scores_chosen": None, "scores_rejected": None, "judge": self.name, "source": "generated",
                    })
            if progress is not None:
                progress.advance()
        return labeled

    def accounting(self) -> dict[str, Any]:
        return {"judge": self.name, "model": self.config.model_path, "responses_scored": self._scored, "calls_made": 0}
