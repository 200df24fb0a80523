"""The OpenTelemetry export: recorded lines -> GenAI spans and metrics over OTLP/HTTP (worker side)."""
