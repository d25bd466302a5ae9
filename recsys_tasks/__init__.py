"""Cold-start recommender workflow: one function per stage, each ``stage(config, inputs..., out_dir)
-> StageResult``, writing only its own directory, atomically.

Stages: `extract.extract`, `kg.kg_embed`, `text.text_embed`, `train.finetune`,
`evaluate.evaluate`, `registry.register`; `pipeline.run_pipeline` runs them all in-process.
Nothing heavy is imported here: Airflow imports the DAG file, and the DAG imports stages
inside its tasks.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
