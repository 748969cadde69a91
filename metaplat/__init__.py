"""metaplat: distributed meta-learning, meta-RL and AutoML on Ray."""

__version__ = "0.1.0"
