"""FineTome chat Space: Llama-3.2-1B-Instruct with the finetome LoRA adapter (lorallama).

Space variables repoint a duplicate without touching this file (all of them: lorallama/serving/config.py):
  LORALLAMA_ADAPTER=<your-name>/<adapter-repo>   LORALLAMA_BASE=<base model>   LORALLAMA_SYSTEM_PROMPT=…
  LORALLAMA_FEEDBACK_DATASET=<your-name>/<dataset>   log likes, dislikes and edited answers there
  LORALLAMA_OFFLINE=1   (your machine only)          no Hub: the bundled SmolLM2-135M-Instruct (+ demo adapter)
"""

from lorallama.serving.chat_app import build_chat_app
from lorallama.serving.config import ChatConfig
from lorallama.serving.web import launch

config = ChatConfig.from_env(
    slug="finetome",
    title="Llama 3.2 1B · FineTome",
    base="unsloth/Llama-3.2-1B-Instruct",
    adapter="lorallama/llama-3.2-1b-finetome",
    dataset="mlabonne/FineTome-100k",
    description="Llama-3.2-1B-Instruct fine-tuned with LoRA on FineTome-100k chat data.",
)
demo = build_chat_app(config)  # loads the model now: ZeroGPU wants it loaded at import

if __name__ == "__main__":
    launch(demo)
