"""Retrieval fine-tuning and evaluation from a post-pretrained checkpoint, and exports for other tools."""
