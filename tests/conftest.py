"""Shared pytest fixtures: each real component has its own fixture module."""

pytest_plugins = [
    "tests.fixtures_s3",  # a moto S3-compatible server on loopback
    "tests.fixtures_media",  # generated HowTo100M-style collections (real ffmpeg files)
    "tests.fixtures_ray",  # local Ray clusters on 127.0.0.1
]
