"""Demo chat Space: SmolLM2-135M-Instruct taught to answer as Captain Lora, a cheerful old sea captain (lorallama).

Space variables repoint a duplicate without touching this file (all of them: lorallama/serving/config.py):
  LORALLAMA_ADAPTER=<your-name>/<adapter-repo>   LORALLAMA_BASE=<base model>   LORALLAMA_SYSTEM_PROMPT=…
  LORALLAMA_FEEDBACK_DATASET=<your-name>/<dataset>   log likes, dislikes and edited answers there
  LORALLAMA_OFFLINE=1   (your machine only)          no Hub: the bundled SmolLM2 + runs/demo/adapter (`make demo`)
"""

from lorallama.serving.chat_app import build_chat_app
from lorallama.serving.config import ChatConfig
from lorallama.serving.web import launch

config = ChatConfig.from_env(
    slug="demo",
    title="SmolLM2 135M · Captain Lora",
    base="HuggingFaceTB/SmolLM2-135M-Instruct",
    adapter="lorallama/smollm2-135m-captain-lora",
    dataset="train_jobs/data/demo_chat.jsonl",
    description="SmolLM2-135M-Instruct taught to answer as Captain Lora, a cheerful old sea captain.",
)
demo = build_chat_app(config)  # loads the model now: ZeroGPU wants it loaded at import

if __name__ == "__main__":
    launch(demo)
