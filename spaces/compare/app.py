"""Compare arena: one prompt, the answers of base Llama 3.2 1B, finetome and marx side by side (lorallama).

Space variables repoint a duplicate without touching this file (all of them: lorallama/serving/config.py):
  LORALLAMA_BASE=<base model>   LORALLAMA_ADAPTERS_FINETOME=<adapter>   LORALLAMA_ADAPTERS_MARX=<adapter,adapter>
  LORALLAMA_OFFLINE=1 (your machine only) no Hub: the bundled SmolLM2-135M-Instruct, the demo adapter standing in
"""

from lorallama.serving.compare_app import build_compare_app
from lorallama.serving.config import CompareConfig
from lorallama.serving.web import launch

config = CompareConfig.from_env(
    title="Llama 3.2 1B · base vs FineTome vs Marx",
    base="unsloth/Llama-3.2-1B-Instruct",
    columns={
        "base": [],
        "finetome": ["lorallama/llama-3.2-1b-finetome"],
        "marx": ["lorallama/llama-3.2-1b-finetome", "lorallama/llama-3.2-1b-marx"],
    },
)
demo = build_compare_app(config)  # loads the models now: ZeroGPU wants them loaded at import

if __name__ == "__main__":
    launch(demo)
