"""The engine: buffer, barrier, batcher, delivery, spool, worker. It imports neither LangChain nor AWS."""
