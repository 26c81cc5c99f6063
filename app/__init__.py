"""Dispatch Farm: the application package. Importing it starts nothing."""
