"""sinkrec: long-sequence recommendation with an honest full-ranking harness."""

__version__ = "0.1.0"
