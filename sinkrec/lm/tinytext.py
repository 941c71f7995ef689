"""A small built-in English text, generated from a story grammar, so `sinkrec lm` runs offline.

It stands in for SimpleStories (not reachable here): short stories with recurring characters whose
names and objects must be carried across sentences. Deterministic per seed.
"""

from __future__ import annotations

import random

NAMES = ["Mia", "Leo", "Ava", "Sam", "Nora", "Ben", "Ivy", "Max", "Zoe", "Tom", "Lily", "Finn"]
ANIMALS = ["cat", "dog", "fox", "owl", "bear", "frog", "duck", "mouse"]
OBJECTS = ["red ball", "blue kite", "little boat", "old map", "shiny key", "green hat", "paper star", "wooden box"]
PLACES = ["park", "forest", "river", "garden", "market", "hill", "beach", "library"]
FEELINGS = ["happy", "sad", "curious", "brave", "tired", "surprised"]


def story(rng: random.Random) -> str:
    hero, friend = rng.sample(NAMES, 2)
    animal, thing, place, later = rng.choice(ANIMALS), rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(PLACES)
    feeling = rng.choice(FEELINGS)
    lines = [
        f"Once upon a time, {hero} had a {thing}.",
        f"One day {hero} went to the {place} with a {animal}.",
        f"The {animal} was {feeling} and ran to the {later}.",
        f"{hero} looked for the {animal} and met {friend}.",
        f"{friend} said, \"I saw a {animal} near the {later}.\"",
        f"So {hero} and {friend} walked to the {later} together.",
        f"There they found the {animal} sitting on the {thing}.",
        f"{hero} smiled and gave the {thing} to {friend}.",
        f"From that day, {hero} and {friend} played at the {place} every week.",
    ]
    keep = sorted(rng.sample(range(1, len(lines) - 1), rng.randint(4, len(lines) - 2)))
    return " ".join([lines[0]] + [lines[i] for i in keep] + [lines[-1]])


def tiny_stories(n: int = 3000, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n\n".join(story(rng) for _ in range(n)) + "\n"
