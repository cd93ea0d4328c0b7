"""Studies of the method on trained runs (rounding sensitivity, activation codes, an int8
requantization what-if); each writes ``research/results/<name>.{json,md}``."""
