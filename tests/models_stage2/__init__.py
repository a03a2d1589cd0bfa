"""Tests of the stage-2 models (tokenizer, view embedding, lighting-aware decoder, heads, radiance MLP)."""
