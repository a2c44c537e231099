"""kepler-top: who burns the power on this node, live."""

__version__ = "0.1.0"
