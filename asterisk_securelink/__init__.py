"""asterisk-securelink: caller-ID anti-spoofing for Asterisk with SLK1 synchronized keys."""

__version__ = "0.1.0"
