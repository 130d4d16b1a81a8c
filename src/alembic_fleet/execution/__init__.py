"""Running targets: the executor interface, the serial executor and its events."""
