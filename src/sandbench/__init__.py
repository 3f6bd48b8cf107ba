"""sandbench: measure isolation environments side by side."""

__version__ = "0.1.0"
