"""Training: data, backend, trainer, resume, the run, data-parallel launch and Hugging Face Jobs.

Imports the ground modules only (never serving, publishing or the command line).
"""
