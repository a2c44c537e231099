"""Prometheus exporter over the engine's snapshots (installed as ``kepler_top.exporter``)."""
