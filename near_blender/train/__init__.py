"""Training of both stages, the default model's recipe (see docs/architecture.md)."""
