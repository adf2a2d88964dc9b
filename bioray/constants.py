"""Constants more than one package needs, each defined once."""

# Label of a position no loss is computed on (torch's cross_entropy default): unmasked tokens in MLM,
# sub-tokens after a word's first in NER, padding.
IGNORE_INDEX = -100

# What makes a model reference an MLflow URI (a registered version, a run's artifact) and not a path.
MLFLOW_URI_PREFIXES = ("models:/", "runs:/")
