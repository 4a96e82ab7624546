"""The detector service: detectors, incidents, stores and the service loop."""
