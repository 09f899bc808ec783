"""Embeddings of videos and texts for search: plan, model side, Parquet output, the Ray job."""
