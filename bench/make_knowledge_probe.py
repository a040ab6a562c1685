"""Write the general-knowledge probe: a few hundred multiple-choice items, scored by log-likelihood at every eval.

    python bench/make_knowledge_probe.py          # → train_jobs/data/knowledge_probe.jsonl

Every item was written for lorallama from facts that have one answer (arithmetic, calendars, capitals, chemical
symbols, opposites, plurals, animal classes, units, planets, comparisons); the wrong choices are drawn from the same
family, so a model cannot pass by spotting the odd one out. Each line is ``{"category", "question", "choices",
"answer"}`` with ``answer`` the index of the right choice, whose place is shuffled (seeded, so the file is the same on
every run). The probe measures forgetting in a second way next to the general chat loss: the share of items whose
right answer the model finds likeliest. Licence: Apache-2.0, as the project.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "train_jobs" / "data" / "knowledge_probe.jsonl"

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Greece": "Athens",
    "the United Kingdom": "London",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "the Czech Republic": "Prague",
    "the Netherlands": "Amsterdam",
    "Belgium": "Brussels",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Kenya": "Nairobi",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
    "Australia": "Canberra",
    "New Zealand": "Wellington",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Cuba": "Havana",
    "Colombia": "Bogotá",
    "Venezuela": "Caracas",
    "the Philippines": "Manila",
    "Indonesia": "Jakarta",
    "Vietnam": "Hanoi",
    "Ukraine": "Kyiv",
    "Switzerland": "Bern",
}
SYMBOLS = {
    "hydrogen": "H",
    "helium": "He",
    "carbon": "C",
    "nitrogen": "N",
    "oxygen": "O",
    "sodium": "Na",
    "magnesium": "Mg",
    "aluminium": "Al",
    "silicon": "Si",
    "phosphorus": "P",
    "sulfur": "S",
    "chlorine": "Cl",
    "potassium": "K",
    "calcium": "Ca",
    "iron": "Fe",
    "copper": "Cu",
    "zinc": "Zn",
    "silver": "Ag",
    "gold": "Au",
    "lead": "Pb",
    "mercury": "Hg",
    "tin": "Sn",
    "neon": "Ne",
    "uranium": "U",
    "iodine": "I",
}
OPPOSITES = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("open", "closed"),
    ("early", "late"),
    ("full", "empty"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("young", "old"),
    ("hard", "soft"),
    ("wet", "dry"),
    ("loud", "quiet"),
    ("high", "low"),
    ("thick", "thin"),
    ("true", "false"),
    ("win", "lose"),
    ("push", "pull"),
    ("buy", "sell"),
    ("day", "night"),
    ("begin", "end"),
    ("above", "below"),
    ("inside", "outside"),
    ("clean", "dirty"),
    ("near", "far"),
    ("cheap", "expensive"),
    ("friend", "enemy"),
    ("north", "south"),
    ("east", "west"),
    ("left", "right"),
    ("question", "answer"),
    ("always", "never"),
    ("first", "last"),
    ("arrive", "leave"),
    ("sharp", "blunt"),
    ("smooth", "rough"),
    ("safe", "dangerous"),
    ("remember", "forget"),
    ("love", "hate"),
]
ANIMALS = {
    "dog": "mammal",
    "cat": "mammal",
    "whale": "mammal",
    "dolphin": "mammal",
    "bat": "mammal",
    "horse": "mammal",
    "elephant": "mammal",
    "eagle": "bird",
    "penguin": "bird",
    "owl": "bird",
    "sparrow": "bird",
    "ostrich": "bird",
    "parrot": "bird",
    "shark": "fish",
    "salmon": "fish",
    "trout": "fish",
    "tuna": "fish",
    "goldfish": "fish",
    "snake": "reptile",
    "lizard": "reptile",
    "crocodile": "reptile",
    "turtle": "reptile",
    "frog": "amphibian",
    "salamander": "amphibian",
    "toad": "amphibian",
}
PLURALS = {
    "child": ["children", "childs", "childes", "childrens"],
    "mouse": ["mice", "mouses", "mousen", "meese"],
    "foot": ["feet", "foots", "footes", "feets"],
    "tooth": ["teeth", "tooths", "toothes", "teeths"],
    "man": ["men", "mans", "manes", "mens"],
    "woman": ["women", "womans", "womanes", "womens"],
    "goose": ["geese", "gooses", "goosen", "geeses"],
    "person": ["people", "persones", "peoples", "persen"],
    "box": ["boxes", "boxs", "boxen", "bixes"],
    "city": ["cities", "citys", "cityes", "citis"],
    "knife": ["knives", "knifes", "knifen", "knive"],
    "leaf": ["leaves", "leafs", "leafes", "leave"],
    "wolf": ["wolves", "wolfs", "wolfes", "wolve"],
    "ox": ["oxen", "oxes", "oxs", "oxens"],
    "baby": ["babies", "babys", "babyes", "babis"],
}
UNITS = [
    ("How many minutes are there in an hour?", "60", ["30", "100", "24"]),
    ("How many seconds are there in a minute?", "60", ["100", "10", "30"]),
    ("How many hours are there in a day?", "24", ["12", "60", "20"]),
    ("How many days are there in a week?", "7", ["5", "10", "6"]),
    ("How many months are there in a year?", "12", ["10", "11", "13"]),
    ("How many centimetres are there in a metre?", "100", ["10", "1000", "60"]),
    ("How many metres are there in a kilometre?", "1000", ["100", "10", "10000"]),
    ("How many grams are there in a kilogram?", "1000", ["100", "10", "500"]),
    ("How many days are there in a leap year?", "366", ["365", "360", "364"]),
    ("How many sides does a triangle have?", "3", ["4", "5", "6"]),
    ("How many sides does a square have?", "4", ["3", "5", "6"]),
    ("How many sides does a pentagon have?", "5", ["4", "6", "8"]),
    ("How many sides does a hexagon have?", "6", ["5", "8", "7"]),
    ("How many sides does an octagon have?", "8", ["6", "10", "7"]),
    ("How many legs does a spider have?", "8", ["6", "4", "10"]),
    ("How many legs does an insect have?", "6", ["8", "4", "10"]),
    ("How many continents are there on Earth?", "7", ["5", "6", "9"]),
    ("At how many degrees Celsius does water boil at sea level?", "100", ["0", "50", "212"]),
    ("At how many degrees Celsius does water freeze?", "0", ["100", "32", "10"]),
    ("How many years are there in a century?", "100", ["10", "1000", "50"]),
]
PLANETS = [
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Earth", "Mars"]),
    ("Which planet is the largest in the Solar System?", "Jupiter", ["Saturn", "Earth", "Neptune"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Mercury"]),
    ("Which planet do people live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("Which planet is famous for its bright rings?", "Saturn", ["Mars", "Mercury", "Venus"]),
    ("What is the star at the centre of the Solar System called?", "the Sun", ["the Moon", "Sirius", "Polaris"]),
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _pick(rng: random.Random, right: str, pool: list[str], k: int = 3) -> list[str]:
    wrong = rng.sample([p for p in dict.fromkeys(pool) if p != right], k)
    return [right, *wrong]


def _numbers(rng: random.Random, right: int, k: int = 3) -> list[str]:
    near = [right + d for d in (-10, -2, -1, 1, 2, 10) if right + d >= 0]
    return [str(right), *map(str, rng.sample(near, k))]


def items(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out: list[tuple[str, str, list[str]]] = []
    sums = {(rng.randint(2, 50), rng.randint(2, 50)) for _ in range(400)}
    for a, b in sorted(sums)[:: max(1, len(sums) // 40)][:40]:
        out.append(("arithmetic", f"What is {a} plus {b}?", _numbers(rng, a + b)))
    differences = {(rng.randint(20, 99), rng.randint(2, 19)) for _ in range(400)}
    for a, b in sorted(differences)[:: max(1, len(differences) // 30)][:30]:
        out.append(("arithmetic", f"What is {a} minus {b}?", _numbers(rng, a - b)))
    products = sorted({(a, b) for a in range(2, 10) for b in range(2, 13)})
    for a, b in rng.sample(products, 30):
        out.append(("arithmetic", f"What is {a} times {b}?", _numbers(rng, a * b)))
    for i, day in enumerate(WEEKDAYS):
        out.append(("calendar", f"Which day comes after {day}?", _pick(rng, WEEKDAYS[(i + 1) % 7], WEEKDAYS)))
        out.append(("calendar", f"Which day comes before {day}?", _pick(rng, WEEKDAYS[i - 1], WEEKDAYS)))
    for i, month in enumerate(MONTHS):
        out.append(("calendar", f"Which month comes after {month}?", _pick(rng, MONTHS[(i + 1) % 12], MONTHS)))
        out.append(("calendar", f"Which month comes before {month}?", _pick(rng, MONTHS[i - 1], MONTHS)))
    for country, city in CAPITALS.items():
        out.append(("capitals", f"What is the capital of {country}?", _pick(rng, city, list(CAPITALS.values()))))
    for element, symbol in SYMBOLS.items():
        question = f"What is the chemical symbol for {element}?"
        out.append(("chemistry", question, _pick(rng, symbol, list(SYMBOLS.values()))))
    words = [w for pair in OPPOSITES for w in pair]
    for a, b in OPPOSITES:
        pool = [w for w in words if w != a]
        out.append(("opposites", f"What is the opposite of {a}?", _pick(rng, b, pool)))
    classes = sorted(set(ANIMALS.values()))
    for animal, kind in ANIMALS.items():
        article = "an" if animal[0] in "aeiou" else "a"
        out.append(("animals", f"What kind of animal is {article} {animal}?", _pick(rng, kind, classes)))
    for word, forms in PLURALS.items():
        out.append(("plurals", f"What is the plural of {word}?", forms))
    for question, right, wrong in UNITS:
        out.append(("units", question, [right, *wrong]))
    for question, right, wrong in PLANETS:
        out.append(("planets", question, [right, *wrong]))
    pairs = {tuple(rng.sample(range(10, 100), 2)) for _ in range(40)}
    for a, b in sorted(pairs)[:20]:
        out.append(("comparisons", f"Which number is larger, {a} or {b}?", [str(max(a, b)), str(min(a, b))]))
    assert len({q for _, q, _ in out}) == len(out), "every question once"
    rows = []
    for category, question, choices in out:
        order = list(range(len(choices)))
        rng.shuffle(order)
        rows.append(
            {
                "category": category,
                "question": question,
                "choices": [choices[i] for i in order],
                "answer": order.index(0),  # the right choice was written first
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    rows = items()
    args.output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
