"""Persistent prompt cache: prefix index, disk tier and the glue to the model."""
