"""``fraud-assets live`` (``make live``): the whole system running, watched in the Dagster UI."""
