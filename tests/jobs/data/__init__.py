"""Fixtures of the planning tests (presets, rules, builder, estimate, CLI)."""
