"""Issue 11: each break, tried as an attacker would, against real processes."""
