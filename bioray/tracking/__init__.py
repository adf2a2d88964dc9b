"""MLflow for bioray: where to track (store), what runs record (runs), writes that survive outages
(outbox), the context a run hands its stages (context), and Hugging Face models as MLflow models
(models). A leaf: it imports nothing else of bioray."""
