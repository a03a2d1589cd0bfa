"""models package (see ../shared/design/architecture.md)."""
