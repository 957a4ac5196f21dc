-- Run once by the postgres image on a new volume: the MLflow database beside Prefect's (POSTGRES_DB).
CREATE DATABASE mlflow;
