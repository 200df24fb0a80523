"""The engine: buffer, batches, flush barrier, worker. It imports neither LangChain nor AWS."""
