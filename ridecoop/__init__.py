"""ridecoop's composition root: the command line and the list of every role."""
