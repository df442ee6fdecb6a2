"""Helpers shared by the tests: free ports and real server processes."""
