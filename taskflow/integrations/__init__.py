"""Integrations of taskflow with other frameworks; each one is an optional extra."""
