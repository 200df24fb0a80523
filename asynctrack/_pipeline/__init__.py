"""The in-process pipeline: queue, barrier, batcher, delivery, spool, engine. No LangChain, no AWS."""
