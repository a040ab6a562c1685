"""The three prompts of the original base-vs-tuned comparison: the demo, the cards, the exports and the Spaces ask them."""

COMPARISON_PROMPTS = (
    "The problem with current economy is",
    "What is the tallest mountain in the world ?",
    "Continue the fibonnaci sequence: 1, 1, 2, 3, 5, 8,",
)
