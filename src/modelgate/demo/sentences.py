"""Texts the embedding model is checked and profiled with.

`REFERENCE_SENTENCES` is the accuracy fixture: deliberately awkward inputs (empty, one
character, emoji, non-Latin scripts, code, text longer than the 256-token window) on which the
served model must agree with sentence-transformers. `generated_sentences` adds a few hundred
ordinary sentences so the reference statistics describe typical traffic, not just edge cases.
"""

from __future__ import annotations

import numpy as np

_LONG_PARAGRAPH = (
    "Model serving is the part of machine learning that users actually touch. A request "
    "arrives, the server checks that its inputs match the declared signature, groups it with "
    "other requests that arrived at about the same time, runs the model once for the whole "
    "batch, and splits the answers back out to each caller. Every step adds latency, and "
    "every shortcut risks a wrong answer that nobody notices until much later. "
)

REFERENCE_SENTENCES: tuple[str, ...] = (
    "",
    "a",
    "\U0001f600\U0001f680\U0001f389",
    "I love this new phone \U0001f60d but the battery dies by noon \U0001f62d",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "How do I reset my password if I no longer have access to my email?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Wie spät ist es in Berlin?",
    "我们明天早上九点在会议室见面。",
    "مرحبا بك في موقعنا، كيف يمكننا مساعدتك اليوم؟",
    "Le chat dort sur le canapé depuis ce matin.",
    "3.14159 2.71828 1.41421 42 1e-9 -17",
    "!!! ??? ... ;;; --- ***",
    "ThIs SeNtEnCe HaS mIxEd CaSe LeTtErS",
    "   lots \t of   whitespace \n\n between    the\twords   ",
    "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)",
    "SELECT customer_id, SUM(amount) FROM orders GROUP BY customer_id HAVING SUM(amount) > 100;",
    "https://example.com/path?query=embedding&lang=en#section-2",
    "Interest rates rose by a quarter point, and mortgage applications fell sharply.",
    "The patient reported mild headaches after starting the new medication.",
    "Refund my order #A-1234, the package arrived damaged.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "can u send me the file asap thx",
    "The the the the the the the the",
    _LONG_PARAGRAPH * 6,
)

_SUBJECTS = (
    "The customer",
    "Our team",
    "A small startup",
    "The new model",
    "My neighbour",
    "The hospital",
    "This library",
    "The city council",
)
_VERBS = (
    "announced",
    "rejected",
    "improved",
    "reviewed",
    "postponed",
    "celebrated",
    "questioned",
    "documented",
)
_OBJECTS = (
    "the quarterly budget",
    "a faster checkout flow",
    "the results of the survey",
    "an unexpected bug in production",
    "plans for a second office",
    "the late delivery of several parcels",
    "a proposal to reduce energy use",
    "the safety guidelines for visitors",
)
_ENDINGS = ("", " yesterday", " after a long discussion", " despite strong objections", " today")


def generated_sentences(count: int = 300, seed: int = 7) -> list[str]:
    """`count` ordinary English sentences from fixed templates, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(count):
        subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
        verb = _VERBS[rng.integers(len(_VERBS))]
        obj = _OBJECTS[rng.integers(len(_OBJECTS))]
        ending = _ENDINGS[rng.integers(len(_ENDINGS))]
        sentences.append(f"{subject} {verb} {obj}{ending}.")
    return sentences
