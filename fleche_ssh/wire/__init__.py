"""Bytes to the remote fleche server, over the remote-process seam."""
