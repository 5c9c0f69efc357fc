"""Facades that speak other services' protocols over the same engine."""
