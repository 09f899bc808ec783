"""CLIP4Clip on open_clip: config, backbone, patch embedding, similarity heads, model, losses, metrics, formats.

Pure PyTorch + open_clip (imported only through model.openclip_import). Import the modules you need, e.g.
`from model.clip4clip import CLIP4Clip`; this package file stays empty so `import model.config` is cheap.
"""
