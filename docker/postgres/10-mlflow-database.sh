#!/bin/bash
# Runs once, when the postgres volume is first initialised: the second database, MLflow's
# backend store (Airflow's metadata database is POSTGRES_DB).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -c "CREATE DATABASE \"${MLFLOW_DB:-mlflow}\" OWNER \"$POSTGRES_USER\""
