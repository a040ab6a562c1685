"""Marx chat Space: Llama-3.2-1B-Instruct + the finetome adapter, further trained on Karl Marx's works (lorallama).

Space variables repoint a duplicate without touching this file (all of them: lorallama/serving/config.py):
  LORALLAMA_ADAPTER=<your-name>/<adapter-repo>   LORALLAMA_BASE_ADAPTERS=<adapters merged in first, comma-separated>
  LORALLAMA_FEEDBACK_DATASET=<your-name>/<dataset>   log likes, dislikes and edited answers there
  LORALLAMA_OFFLINE=1   (your machine only)          no Hub: the bundled SmolLM2-135M-Instruct (+ demo adapter)
"""

from lorallama.serving.chat_app import build_chat_app
from lorallama.serving.config import ChatConfig
from lorallama.serving.web import launch

config = ChatConfig.from_env(
    slug="marx",
    title="Llama 3.2 1B · Marx",
    base="unsloth/Llama-3.2-1B-Instruct",
    base_adapters=["lorallama/llama-3.2-1b-finetome"],  # marx was trained on top of finetome
    adapter="lorallama/llama-3.2-1b-marx",
    dataset="mallam-ai/marx-engels",
    description="finetome's model further trained on the complete works of Karl Marx, with chat replay.",
)
demo = build_chat_app(config)  # loads the model now: ZeroGPU wants it loaded at import

if __name__ == "__main__":
    launch(demo)
