"""edge-fair-bench: speed and demographic fairness of face models on edge hardware."""

__version__ = "0.1.0"
