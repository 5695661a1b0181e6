"""Varied demo personas for the embedded default store and for benchmarks."""

from __future__ import annotations

import random
from typing import Iterator

FIRST_NAMES = [
    "Alex", "Bea", "Carlos", "Dana", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kemi", "Liam", "Maya", "Nico", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tova",
]
ROLES = [
    "a demanding customer", "a nervous new hire", "a skeptical manager", "a friendly neighbour",
    "an impatient investor", "a grieving client", "a curious student", "a tired nurse",
]


def demo_personas(count: int, seed: int = 7) -> Iterator[dict]:
    """Deterministic for a seed; traits spread over the whole 0..1 range so every voice appears."""
    rng = random.Random(seed)
    for number in range(count):
        yield {
            "name": f"{rng.choice(FIRST_NAMES)} {number + 1}",
            "temper_level": round(rng.random(), 2),
            "chattiness": round(rng.random(), 2),
            "emotional_attachment": round(rng.random(), 2),
            "description": f"Plays {rng.choice(ROLES)}.",
        }
