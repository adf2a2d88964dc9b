"""Fine-tuned models as MLflow models that serve what `bioray predict` prints.

A fine-tuned model is logged with MLflow's transformers flavor, so `mlflow.transformers.load_model`
gives its Hugging Face pipeline; but the model's python_function flavor, which `mlflow models serve`
and `mlflow.pyfunc.load_model` use, is this module. MLflow's own wrapper answers a token-classification
request with each text's labels joined by commas ("B-ENT,I-ENT"): no offsets, no words, sub-tokens
the model was never trained to tag, and an error for a text without entities. This one returns, per
text, the entities (or label probabilities) of bioray.tasks.inference, the code `bioray predict` runs.

Serving needs bioray importable where the model is served (`--env-manager local` in bioray's
environment or image). Extractive QA models keep MLflow's wrapper (bioray's predict has no QA input).
"""

from __future__ import annotations

from pathlib import Path

from bioray.tasks.inference import Predictor
from bioray.tracking.models import hf_parts, log_transformers_model, pipeline_for

SERVED_PIPELINES = ("token-classification", "text-classification")  # what Predictor answers


def log_task_model(model_dir: Path, run_id: str, name: str, registered_model_name: str | None = None):
    """Log a fine-tuned model on the run (MLflow's ModelInfo back), served by this module when bioray's
    predict handles its kind."""
    task, _ = pipeline_for(model_dir)
    return log_transformers_model(model_dir, run_id, name, registered_model_name,
                                  pyfunc_loader=__name__ if task in SERVED_PIPELINES else None)


def _texts(data) -> list[str]:
    """The texts of a request as MLflow hands them over: a DataFrame (its first column), a Series, an
    array, a list (of texts, or of one-key records) or one text."""
    if hasattr(data, "columns"):  # a DataFrame: a schema-checked `inputs` list or `dataframe_split`
        data = data.iloc[:, 0]
    if hasattr(data, "tolist"):  # Series, ndarray
        data = data.tolist()
    if isinstance(data, str):
        data = [data]
    texts = [next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else item for item in data]
    wrong = [item for item in texts if not isinstance(item, str)]
    if wrong:
        raise ValueError(f"expected texts (strings), got {type(wrong[0]).__name__}: {str(wrong[0])[:80]}")
    return texts


class ServedModel:
    """What MLflow's pyfunc loader returns: a Predictor behind `predict(data, params)`."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def predict(self, data, params: dict | None = None) -> list[dict]:
        return self.predictor(_texts(data))


def _load_pyfunc(path: str, model_config: dict | None = None) -> ServedModel:
    """MLflow's loader hook: `path` is the logged model's directory (weights in model/, tokenizer in
    components/tokenizer/)."""
    return ServedModel(Predictor(*hf_parts(Path(path))))
