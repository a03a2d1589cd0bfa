"""train package (see ../shared/design/architecture.md)."""
