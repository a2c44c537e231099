"""Power sources: readers of raw node energy (installed as ``kepler_top.backends``)."""
