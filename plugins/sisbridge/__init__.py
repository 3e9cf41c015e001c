"""sisbridge: the SIS roster sync from a school's S3 bucket to the uConnect user store."""

__version__ = "0.1.0"
