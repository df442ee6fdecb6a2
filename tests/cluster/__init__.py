"""Tests of the local cluster launcher's pure core."""
