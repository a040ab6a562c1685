"""The studio Space: sign in, fine-tune a recipe on your data as a Job in your namespace, watch it, get your own chat
Space (lorallama). Thin: every part is in the vendored lorallama/studio/.

Space variables (all of them: lorallama/studio/config.py):
  LORALLAMA_STUDIO_RECIPES=finetome,marx    the recipes offered (default: every one a Job can train)
  LORALLAMA_STUDIO_CHAT_SPACE=<owner>/<space>  the chat Space duplicated for a recipe that names none
"""

from lorallama.studio.app import build_studio, launch_studio
from lorallama.studio.config import StudioConfig

config = StudioConfig.from_env(chat_space="lorallama/finetome")
demo = build_studio(config)

if __name__ == "__main__":
    launch_studio(demo)
