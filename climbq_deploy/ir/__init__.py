"""The integer IR between training and every target, and its on-disk container ``.climbq``."""
