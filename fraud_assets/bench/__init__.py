"""The performance benchmark: ``fraud-assets bench`` -> ``var/bench/report.json``."""
