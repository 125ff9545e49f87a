"""fraud_assets: real-time credit-card fraud detection on Kafka, Spark and Dagster."""

__version__ = "0.1.0"
