"""Ray actor shells: lifecycle, batching, health and metrics around the domain in pipeline/."""
