"""Full models behind one interface (`SequentialRecommender`) and a registry of names."""

from .registry import MODELS, build_model, register, validate_model_options

__all__ = ["MODELS", "build_model", "register", "validate_model_options"]
