"""The file MLflow logs as the model's code ("models from code"): no pickled Python object.

Logged by `registry.register` as ``python_model``; MLflow executes it when the model is loaded,
and the package itself travels with the model through ``code_paths``.
"""

from mlflow.models import set_model

from recsys_tasks.registry.pyfunc import RecsysModel

set_model(RecsysModel())
