"""compatctl: update the embedding model of a retrieval system without re-embedding the gallery."""

__version__ = "0.1.0"
