"""Cold-start recommender workflow: one function per stage, each ``stage(config, inputs..., out_dir)
-> StageResult``, writing only its own directory, atomically.

The stage graph is declared once in `stages.STAGES` (extract -> kg_embed + text_embed -> finetune ->
evaluate -> register); the Airflow DAG and `pipeline.run_pipeline` (``recsys run``) are built from it.
The subpackages read as the flow (docs/architecture.md). Nothing heavy is imported here: Airflow
imports the DAG file, and each stage imports its library function when it runs.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
