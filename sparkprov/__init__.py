"""sparkprov: declarative provisioning for NVIDIA DGX Spark machines."""

__version__ = "0.1.0"
