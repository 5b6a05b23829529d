"""The throwaway SSH server behind ``fleche-ssh demo``; not used by the cache itself."""
