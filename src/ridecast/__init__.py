"""ridecast: deploy taxi-ride models as batch jobs, web services and stream consumers."""

__version__ = "0.1.0"
