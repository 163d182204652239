"""The project's own prompt sets (data/prompts/train.jsonl, eval.jsonl): templates × topics, deterministic.

Spec-Bench is for evaluation only; these prompts are written here so that training never sees it.
Run `python -m spectr_lib.distill.prompt_set` to rewrite the files (the same seed gives the same files).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from ..paths import DATA_DIR

TOPICS = [
    "volcanoes", "the history of the printing press", "honeybees", "black holes", "the Roman Empire", "coffee",
    "climate change", "the human immune system", "electric cars", "chess", "the Great Wall of China",
    "photosynthesis", "jazz music", "the internet", "ancient Egypt", "rainforests", "the moon landing",
    "sleep", "vaccines", "earthquakes", "the French Revolution", "octopuses", "renewable energy", "origami",
    "the stock market", "glaciers", "the Renaissance", "machine learning", "bread baking", "the Olympic Games",
    "whales", "democracy", "plate tectonics", "the piano", "deserts", "the water cycle", "bicycles",
    "antibiotics", "the Silk Road", "solar panels", "mountains", "friendship", "public libraries", "tea",
    "the theory of evolution", "video games", "recycling", "the Amazon river", "robots", "time zones",
    "lighthouses", "coral reefs", "the immune response to viruses", "urban gardening", "the Moon", "trains",
    "the human brain", "wolves", "paper money", "medieval castles", "hurricanes", "the periodic table",
]
PLACES = ["Kyoto", "Lisbon", "Patagonia", "Iceland", "Morocco", "New Zealand", "Vienna", "the Scottish Highlands",
          "Vietnam", "Peru", "Norway", "Cape Town", "Istanbul", "Quebec", "Tasmania", "Sicily"]
ROLES = ["a pirate captain", "a medieval knight", "a detective in 1920s London", "a friendly robot",
         "a wise old wizard", "a space station commander", "a grumpy chef", "a time traveller from 2300",
         "a museum tour guide", "a sports commentator", "a lighthouse keeper", "a famous inventor"]
LANGS = ["French", "Spanish", "German", "Italian", "Portuguese"]
SENTENCES = [
    "The weather is beautiful today and we are going to the park.", "Where is the nearest train station?",
    "I would like to order a cup of tea and a piece of cake.", "My brother works as a doctor in a big hospital.",
    "Please close the window because it is cold.", "We visited the museum last weekend with our friends.",
    "Reading books every evening helps me relax.", "The meeting has been moved to Thursday afternoon.",
    "Can you recommend a good restaurant nearby?", "She has been learning to play the guitar for two years.",
]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "computes the factorial of n",
    "finds the largest element in a list", "counts the vowels in a sentence", "merges two sorted lists",
    "removes duplicates from a list while keeping order", "computes the Fibonacci numbers up to n",
    "checks whether a word is a palindrome", "converts Celsius to Fahrenheit", "sorts a list of dictionaries by a key",
    "reads a text file and counts its lines", "computes the average of a list of numbers",
    "finds the greatest common divisor of two numbers", "flattens a nested list", "returns the n most common words",
]
LANGUAGES = ["Python", "JavaScript", "C", "Java", "Rust", "Go"]

TEMPLATES = {
    "writing": ["Write a short story about {topic}.", "Write a poem about {topic}.",
                "Write a persuasive paragraph on why people should learn about {topic}.",
                "Compose a blog post about a trip to {place}.", "Write a product description for a book about {topic}.",
                "Draft a short speech for a school event about {topic}."],
    "roleplay": ["Pretend you are {role}. Describe your typical day.", "You are {role}. Introduce yourself to a new friend.",
                 "Act as {role} and give advice to someone who is nervous about an exam.",
                 "Imagine you are {role}. What do you think about {topic}?"],
    "reasoning": ["If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Explain.",
                  "A farmer has {a} sheep and all but {b} run away. How many are left? Explain your reasoning.",
                  "Which is heavier, a kilogram of feathers or a kilogram of iron? Explain.",
                  "Tom is taller than Ann, and Ann is taller than Joe. Who is the shortest? Explain.",
                  "What are the pros and cons of {topic}? Think step by step."],
    "math": ["What is {a} multiplied by {b}?", "Solve for x: {a}x + {b} = {c}.", "What is {a} percent of {c}?",
             "A rectangle is {a} cm wide and {b} cm long. What is its area and perimeter?",
             "If a car travels at {a} km per hour for {b} hours, how far does it go?",
             "A shop sells pens for {a} dollars each. How much do {b} pens cost?"],
    "coding": ["Write a {lang} function that {task}.", "Explain what a {lang} function that {task} would look like, step by step.",
               "How do I write code in {lang} that {task}?"],
    "extraction": ["Extract the names and ages from this text: '{n1} is {a} years old, and her friend {n2} is {b}.'",
                   "List the cities mentioned in: 'We flew from {p1} to {p2}, then took a train to {p3}.'",
                   "From the sentence '{s}', list every noun."],
    "stem": ["Explain how {topic} works.", "What is the science behind {topic}?", "Describe {topic} to a ten-year-old.",
             "What are the main facts everyone should know about {topic}?"],
    "humanities": ["Why was {topic} important in history?", "Discuss the cultural impact of {topic}.",
                   "What can we learn from {topic}?", "Compare {topic} and {topic2}."],
    "translation": ["Translate into {lang_h}: {s}", "How do you say '{s}' in {lang_h}?"],
    "summarization": ["Summarize in two sentences why {topic} matters.", "Give a short summary of the key ideas about {topic}.",
                      "Summarize this: '{s} {s2}'"],
    "qa": ["What is {topic}?", "Who invented {topic2}?", "Where can I learn more about {topic}?",
           "When did people first study {topic}?", "Is {topic} dangerous?"],
    "math_reasoning": ["Mary has {a} apples. She gives {b} to her friend and buys {c} more. How many apples does she have? Show your work.",
                       "A class has {c} students. {a} of them play football and the rest play chess. How many play chess? Explain.",
                       "John reads {a} pages a day. How many days does he need to read a book of {c} pages? Explain."],
    "rag": ["Using the facts below, answer the question.\nFacts: {topic} has been studied for many years. {s}\nQuestion: why do people study {topic}?",
            "Context: {s} {s2}\nBased on the context, what happened?"],
}
NAMES = ["Alice", "Bob", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luis"]


def _fill(template: str, rng: random.Random) -> str:
    a, b = rng.randint(2, 60), rng.randint(2, 30)
    return template.format(
        topic=rng.choice(TOPICS), topic2=rng.choice(TOPICS), place=rng.choice(PLACES), role=rng.choice(ROLES),
        lang=rng.choice(LANGUAGES), task=rng.choice(CODE_TASKS), lang_h=rng.choice(LANGS), s=rng.choice(SENTENCES),
        s2=rng.choice(SENTENCES), a=a, b=b, c=a + b + rng.randint(1, 100), n1=rng.choice(NAMES), n2=rng.choice(NAMES),
        p1=rng.choice(PLACES), p2=rng.choice(PLACES), p3=rng.choice(PLACES))


def make_prompts(n: int, seed: int) -> list[dict]:
    """n distinct prompts, spread evenly over the categories."""
    rng = random.Random(seed)
    seen, out, cats, turn = set(), [], list(TEMPLATES), 0
    for _ in range(200 * n):  # a category whose templates run out of new fillings is skipped
        if len(out) == n:
            break
        cat = cats[turn % len(cats)]
        text = _fill(rng.choice(TEMPLATES[cat]), rng)
        if text not in seen:
            seen.add(text)
            out.append({"id": len(out), "category": cat, "prompt": text})
            turn += 1
        elif rng.random() < 0.05:
            turn += 1
    return out


def write_prompt_sets(folder: Path = DATA_DIR / "prompts", n_train: int = 1200, n_eval: int = 65) -> None:
    """Write train.jsonl and a disjoint eval.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    train = make_prompts(n_train, seed=0)
    taken = {r["prompt"] for r in train}
    pool = [r for r in make_prompts(n_train + 4 * n_eval, seed=1) if r["prompt"] not in taken]
    per_cat: dict[str, list] = {}
    for r in pool:
        per_cat.setdefault(r["category"], []).append(r)
    eval_ = [rows[i] for i in range(n_eval // len(per_cat)) for rows in per_cat.values()]
    for name, rows in (("train", train), ("eval", eval_)):
        with open(folder / f"{name}.jsonl", "w") as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({"id": i, "category": r["category"], "prompt": r["prompt"]}) + "\n")


if __name__ == "__main__":
    write_prompt_sets()
