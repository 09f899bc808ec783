"""The trainer's checkpoint folder: its file names (layout)."""
