"""sparse package (see ../shared/design/architecture.md)."""
