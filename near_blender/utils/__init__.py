"""Small helpers shared across the stack (atomic file writes, progress reporting)."""
