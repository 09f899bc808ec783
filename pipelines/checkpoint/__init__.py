"""The trainer's checkpoint folder and everything that follows a checkpoint URL to its bytes.

layout      every file name of a run folder (the only module that spells them)
store       committed, resumable checkpoints of a run on a local folder or S3 (write, prune, resolve, download)
read        read_checkpoint(url | ref): a committed checkpoint's contents, typed
init_model  the model an --init names (a checkpoint, plain CLIP, OpenAI's weights file)
exports     a checkpoint for other tools (open_clip, CLIP4Clip, safetensors) and finding such an export
"""
