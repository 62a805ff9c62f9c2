"""Encoders: everything that imports torch or open_clip lives here."""
