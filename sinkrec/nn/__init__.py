"""Layers built on `sinkrec.ops`; nothing here knows about datasets or training."""
