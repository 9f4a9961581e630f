"""Private implementation modules of tdjax; the public surface is `tdjax/__init__.py`."""
