"""File names of the model's own save format (model.formats.save_model): weights + JSON model config.

A module without imports, so that the checkpoint layout (pipelines.checkpoint.layout) can name these files
without loading torch.
"""

WEIGHTS_FILE = "model.safetensors"  # the state dict; its metadata also holds the model config
CONFIG_FILE = "model_config.json"  # CLIP4ClipConfig.to_dict(): the one copy of the model config readers use
