"""metaplat.specs: the typed experiment spec and its one YAML loader (no Ray imports here)."""

from metaplat.specs.loader import load_spec, parse_spec, summary, validate_spec
from metaplat.specs.schema import ExperimentSpec
from metaplat.specs.typecheck import SpecError

__all__ = ["ExperimentSpec", "SpecError", "load_spec", "parse_spec", "summary", "validate_spec"]
