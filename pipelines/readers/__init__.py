"""Dataset readers: parse raw files (IDX, image folders, ...) into numpy columns."""
