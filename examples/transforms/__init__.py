"""Example transform hooks to copy into function/transform.py."""
