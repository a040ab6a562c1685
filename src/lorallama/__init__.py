"""lorallama: fine-tune small Llama models with LoRA, train as resumable Hub jobs, publish each as a chat Space."""

__version__ = "0.1.0"
