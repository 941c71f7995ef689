"""Full models behind one interface (`SequentialRecommender`) and one table of names."""

from .base import Encoded, SequentialRecommender
from .registry import MODELS, build_model, validate_model_options

__all__ = ["MODELS", "Encoded", "SequentialRecommender", "build_model", "validate_model_options"]
