"""CRNN scene-text recognition: the library behind the pipeline's steps."""

__version__ = "0.1.0"
