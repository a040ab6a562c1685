"""Publishing: model and dataset cards, the sync of Spaces and cards to the Hub, datasets, exports.

Sits above training and serving: it reads finished runs and the data pipeline's validation, and never the CLI.
"""
