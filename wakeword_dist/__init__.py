"""wakeword-dist: distil frozen speech teachers into tiny wake-word students."""
__version__ = "0.1.0"
