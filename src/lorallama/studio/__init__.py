"""The studio: fine-tune your own model from a Space, as a Job in your own namespace, and get your own chat Space.

A visitor signs in with Hugging Face (OAuth; ``signin``), picks a recipe and, if they like, their own Hub dataset,
sets the few knobs that matter (``form``), sees the same validation report as ``lorallama data inspect`` on a
sample of their data with the token count and the ETA and cost per flavor (``dataset_check``), and launches: the
adapter repo is created in their namespace and the training job and a small watcher job run there, with their
token (``launch``). The page follows the run from the repo alone (``watch``) and, when it is done, creates their
chat Space and pushes the model card (``publish``). ``app`` is the Gradio page, wiring only.

Layer: the top, beside the command line. It may import training, serving, publishing and the ground modules;
nothing imports it but ``spaces/studio/app.py``. Every Hub call made for a visitor runs inside
``hub.acting_for(visitor.token)``: the Space's own HF_TOKEN never does a visitor's work.
"""
