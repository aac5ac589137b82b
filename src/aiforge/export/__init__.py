"""Hand a model to others: a Hugging Face model repo with a model card (hub.py), a Gradio Space
(space.py), a serving container (docker.py), and the MLflow model wrapper of registered versions
(mlflow_model.py). Every target starts from the same source (source.py: REF -> model dir, task,
training record) and writes the same facts (metadata.py)."""
