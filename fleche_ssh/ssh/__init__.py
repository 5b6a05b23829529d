"""One authenticated SSH transport per destination, and the pool that shares them."""
