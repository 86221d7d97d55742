"""iotnas: constrained architecture search for image classifiers on IoT devices."""

__version__ = "0.1.0"
