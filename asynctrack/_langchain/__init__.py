"""The LangChain boundary: the callback handler, argument capture, and records → events."""
