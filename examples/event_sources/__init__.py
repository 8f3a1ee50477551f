"""Other event sources feeding consumers through the channel layer (see README.md)."""
