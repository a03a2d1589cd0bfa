"""data package (see ../shared/design/architecture.md)."""
