"""Destinations (local directory, S3) and parameter sinks (SageMaker), behind one protocol."""
