"""End-to-end tests: the real cluster started by `sessionha up`, driven through the proxy."""
