"""The LangChain boundary: the callback handler, the tracker spec, the SageMaker drop-in."""
