"""``fraud-assets stream``: the Dagster scoring job, launched from the command line."""
